"""Make the published asv dashboard work without the internet.

asv 0.6 writes an index.html that loads jQuery, Flot, Bootstrap, stupidtable and blueimp-md5
from CDNs, which neither CI nor this project's machines can reach; they do reach the npm
registry. This fetches the same libraries with ``npm pack`` (kept in .asv/vendor), copies them
next to index.html and points the page at the copies. Run it after every ``asv publish``:

    asv publish && python -m benchmarks.offline_dashboard
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Each CDN address in asv 0.6.6's index.html -> (npm package, the same file inside it).
# Flot ships unminified on npm, and stupidtable's npm release is 1.1.3 (1.0.1 is not there).
VENDORED = {
    "https://code.jquery.com/jquery-3.3.1.min.js": ("jquery@3.3.1", "dist/jquery.min.js"),
    **{
        f"https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot{part}.min.js": (
            "flot@0.8.3", f"jquery.flot{part}.js")
        for part in ("", ".time", ".selection", ".categories")
    },
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js": (
        "flot-orderbars@1.0.0", "js/jquery.flot.orderBars.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js": (
        "stupid-table-plugin@1.1.3", "stupidtable.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js": (
        "blueimp-md5@2.19.0", "js/md5.min.js"),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js": (
        "bootstrap@3.1.1", "dist/js/bootstrap.min.js"),
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css": (
        "bootstrap@3.1.1", "dist/css/bootstrap.min.css"),
}
TAG = re.compile(r"<(?:script|link)\b[^>]*>")
# Subresource-integrity hashes name the CDN's bytes; the copies are the npm release's.
CDN_ATTRS = re.compile(r'\s(?:integrity|crossorigin|referrerpolicy)="[^"]*"')


def tarball(package: str, cache: Path) -> Path:
    name, version = package.rsplit("@", 1)
    return cache / f"{name}-{version}.tgz"


def fetch_all(packages: set[str], cache: Path):
    """``npm pack`` the packages not in ``cache`` yet, in one call (npm's start-up is a second
    or two: once, not once per package)."""
    missing = sorted(p for p in packages if not tarball(p, cache).exists())
    if missing:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(cache), *missing],
                       check=True, stdout=subprocess.DEVNULL)


def member(package: str, name: str, cache: Path) -> bytes:
    with tarfile.open(tarball(package, cache)) as tar:
        return tar.extractfile(f"package/{name}").read()


def localise(html_dir: Path, cache: Path):
    index = html_dir / "index.html"
    vendor = html_dir / "vendor"
    vendor.mkdir(exist_ok=True)
    html = index.read_text()
    fetch_all({package for url, (package, _) in VENDORED.items() if url in html}, cache)

    def rewrite(match: re.Match) -> str:
        tag = match.group(0)
        url = re.search(r'(?:src|href)="(https?://[^"]+)"', tag)
        if url is None:
            return tag
        if url.group(1) not in VENDORED:
            raise SystemExit(f"{index} loads {url.group(1)}, which this script does not know: "
                             "asv changed; add it to VENDORED")
        package, name = VENDORED[url.group(1)]
        local = f"vendor/{package.split('@')[0]}-{Path(name).name}"
        (html_dir / local).write_bytes(member(package, name, cache))
        return CDN_ATTRS.sub("", tag.replace(url.group(1), local))

    index.write_text(TAG.sub(rewrite, html))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html_dir", nargs="?", default=ROOT / ".asv" / "html", type=Path)
    parser.add_argument("--cache", default=ROOT / ".asv" / "vendor", type=Path)
    args = parser.parse_args(argv)
    localise(args.html_dir, args.cache)


if __name__ == "__main__":
    main()

"""Package discovery only (metadata is in pyproject.toml).

The top-level packages and their folders are declared once, in pyproject.toml's ``[tool.zone.packages]``;
pyproject.toml alone cannot both discover packages and rename one (``build/`` -> ``zonebuild``), so the list of
subpackages is computed here. setuptools' own build directory would be ``build/``, which is our ``zonebuild``
package: a later build could pick its ``build/lib/...`` copies up as ``zonebuild.lib.*``. It goes to
``.setuptools-build/`` instead.
"""

import tomllib
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
SETUPTOOLS_BUILD = ".setuptools-build"
TOP_LEVEL = tomllib.loads((HERE / "pyproject.toml").read_text())["tool"]["zone"]["packages"]

packages: list[str] = []
package_dir: dict[str, str] = {}
for name, folder in TOP_LEVEL.items():
    found = find_packages(where=str(HERE), include=[folder, f"{folder}.*"])
    if folder not in found:
        raise SystemExit(f"pyproject.toml [tool.zone.packages]: {name} = {folder!r} is not a package folder")
    packages += [name + sub[len(folder):] for sub in found]
    if name != folder:
        package_dir[name] = folder

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"zonebuild": ["stage0/*.c"], "shim.protos": ["*.proto", "*.pyi"]},
    options={"build": {"build_base": SETUPTOOLS_BUILD}},
)

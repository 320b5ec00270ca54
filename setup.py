"""Package discovery only (metadata is in pyproject.toml).

`build/` is installed as `zonebuild` so it never shadows PyPA's `build` package; pyproject.toml alone
cannot both discover packages and rename one, so the list is computed here.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["styrolite", "styrolite.*", "idm", "idm.*", "zoneinit", "zoneinit.*",
                                  "host", "host.*"])
packages += ["zonebuild" + name[len("build"):] for name in find_packages(include=["build", "build.*"])]

setup(packages=packages, package_dir={"zonebuild": "build"}, package_data={"zonebuild": ["stage0/*.c"]})

"""Copies the built libtessera.so into the package being built, so that an
installed tessera finds its library next to itself. The library is taken
from $TESSERA_LIB, else from the checkout's build tree (../build/lib); run
`make` first. Everything else is in pyproject.toml."""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        lib = os.environ.get("TESSERA_LIB") or os.path.join(HERE, "..", "build", "lib",
                                                            "libtessera.so")
        if not os.path.isfile(lib):
            raise SystemExit(f"tessera: {lib} does not exist; build the library with `make` "
                             "in the checkout first, or set TESSERA_LIB to a built libtessera.so")
        target = os.path.join(self.build_lib, "tessera", "libtessera.so")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(lib, target)


setup(cmdclass={"build_py": BuildWithLibrary})

"""Builds the optional native HTTP/2 codec (`tulle.codec._h2native`, a binding to libnghttp2).

Everything else is in pyproject.toml. The extension is optional: when it
cannot be built (no compiler, no libnghttp2), installation goes on and the
proxy runs the pure-Python codec (h2), saying so once in its log and in
the admin `/metrics` (`tulle_http2_codec_info`).

It links against the runtime library `libnghttp2.so.14` (present on Debian
and Ubuntu as curl's dependency) with the headers vendored under
src/tulle/codec/_vendor, so no `-dev` package is needed; set
TULLE_NGHTTP2_LINK=nghttp2 to link against `libnghttp2.so` instead.
"""

import os

from setuptools import Extension, setup

_LIBRARY = os.environ.get("TULLE_NGHTTP2_LINK", ":libnghttp2.so.14")

setup(
    ext_modules=[
        Extension(
            "tulle.codec._h2native",
            sources=["src/tulle/codec/_h2native.c"],
            include_dirs=["src/tulle/codec/_vendor"],
            extra_compile_args=["-O2", "-Wall", "-Wno-unused-parameter"],
            extra_link_args=[f"-l{_LIBRARY}"],
            optional=True,
        )
    ]
)

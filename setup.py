"""Builds the optional native codecs: HTTP/2 (`tulle.codec._h2native`, a binding to
libnghttp2) and the HTTP/1.1 head scanner (`tulle.codec._h1native`, plain C).

Everything else is in pyproject.toml. Both extensions are optional: when one
cannot be built (no compiler, no libnghttp2), installation goes on. Without
`_h2native` the proxy runs the pure-Python HTTP/2 codec (h2), saying so once
in its log and in the admin `/metrics` (`tulle_http2_codec_info`); without
`_h1native` llhttp (httptools) parses every HTTP/1 head, as before it existed.

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
        ),
        Extension(
            "tulle.codec._h1native",
            sources=["src/tulle/codec/_h1native.c"],
            extra_compile_args=["-O2", "-Wall"],
            optional=True,
        ),
    ]
)

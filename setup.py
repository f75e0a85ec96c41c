"""Build the optional C scanner of the Hubble reader (recommender/ingest/_hubble_scan.c).

Everything else is in pyproject.toml. The extension is optional: when it cannot be compiled (no
C compiler, say) the install still succeeds and the reader uses its pure-Python path, which
gives exactly the same rows and ledger, only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "recommender.ingest._hubble_scan",
            ["recommender/ingest/_hubble_scan.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)

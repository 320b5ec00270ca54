"""``python -m styrolite``: the OCI runtime command line (also the entry the host binary is compiled from)."""

if __name__ == "__main__":   # importing the module (a tool walking the package) runs nothing
    from styrolite.cli import run

    run()

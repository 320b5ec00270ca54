"""The libxenvchan declarations, compiled by cffi (out-of-line ABI mode) into _vchan_ffi.py.

Why out-of-line: the zone's PID 1 (Nuitka) then needs neither pycparser nor a parse at start-up, exactly like
the syscall seam (styrolite/syscalls/ffi_build.py). Regenerate after editing ``CDEF``:
python -m idm.vchan_ffi_build
"""

from __future__ import annotations

import os
import sys

CDEF = """
struct libxenvchan;
/* The leading fields of struct libxenvchan (tools/include/libxenvchan.h, Xen 4.17): we only touch 'blocking'. */
struct libxenvchan_head {
    void *handle;            /* union { xengntshr_handle *gntshr; xengnttab_handle *gnttab; } */
    void *ring;
    void *event;
    uint32_t event_port;
    int is_server:1;
    int server_persist:1;
    int blocking:1;
};
struct libxenvchan *libxenvchan_server_init(void *logger, int domain, const char *xs_path,
                                            size_t read_min, size_t write_min);
struct libxenvchan *libxenvchan_client_init(void *logger, int domain, const char *xs_path);
void libxenvchan_close(struct libxenvchan *ctrl);
int libxenvchan_read(struct libxenvchan *ctrl, void *data, size_t size);
int libxenvchan_write(struct libxenvchan *ctrl, const void *data, size_t size);
int libxenvchan_wait(struct libxenvchan *ctrl);
int libxenvchan_fd_for_select(struct libxenvchan *ctrl);
int libxenvchan_is_open(struct libxenvchan *ctrl);
int libxenvchan_data_ready(struct libxenvchan *ctrl);
int libxenvchan_buffer_space(struct libxenvchan *ctrl);
"""

MODULE = "idm._vchan_ffi"


def generate(target_dir: str) -> str:
    """Write _vchan_ffi.py into target_dir; returns its path. (The same out-of-line ABI recipe as
    styrolite/ffigen.py, written out here because IDM imports nothing of the runtime.)"""
    from cffi import FFI

    ffi = FFI()
    ffi.cdef(CDEF)
    ffi.set_source(MODULE, None)
    path = os.path.join(target_dir, "_vchan_ffi.py")
    ffi.emit_python_code(path)
    with open(path, encoding="ascii") as f:
        text = f.read()
    with open(path, "w", encoding="ascii") as f:
        f.write("# ruff: noqa: E501\n" + text)  # generated one-line tables
    return path


if __name__ == "__main__":
    print(generate(os.path.dirname(os.path.abspath(__file__))), file=sys.stderr)

# ruff: noqa: E501
# auto-generated file
import _cffi_backend

ffi = _cffi_backend.FFI('zoneinit._memory_ffi',
    _version = 0x2601,
    _types = b'\x00\x00\x03\x0D\x00\x00\x1C\x01\x00\x00\x00\x0F\x00\x00\x07\x01',
    _globals = (b'\x00\x00\x00\x23malloc_trim',0,),
)

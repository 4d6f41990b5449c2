// CRC-32C (Castagnoli) in the CPU's own instructions, for the spool's record
// checksums (SpoolCodec.swift). Swift keeps the portable table version
// (`CRC32C` in PosternCore, which has no C dependency); the runtime installs
// the function returned here when the CPU has the instructions
// (CRCAcceleration.swift).
#ifndef POSTERN_CRC32C_H
#define POSTERN_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/// Continues a CRC-32C over `len` bytes at `data`. `crc` is the raw register
/// (the bit-reflected polynomial 0x82F63B78, no inversion applied here): start
/// with 0xFFFFFFFF and invert the final value, as `CRC32C` in Swift does.
typedef uint32_t (*cl_crc32c_function)(uint32_t crc, const void *data, size_t len);

/// The hardware CRC-32C of this CPU, or NULL when it has none: SSE4.2's crc32
/// on x86_64, the ARMv8 CRC32 instructions on aarch64 (AT_HWCAP HWCAP_CRC32),
/// and the same instructions in 32-bit mode on an ARMv8 core running armv7
/// code (AT_HWCAP2 HWCAP2_CRC32). Decided by asking the CPU or the kernel on
/// each call (cheap; called once at start).
cl_crc32c_function cl_crc32c_hardware(void);

#endif

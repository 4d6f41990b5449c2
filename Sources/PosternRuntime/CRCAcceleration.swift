import CLibc
import PosternCore

/// Installs the CPU's CRC-32C instructions (`cl_crc32c_hardware`, crc32c.c) as
/// `CRC32C.accelerated`, when it has them. Called once, first thing in the
/// entry point, before anything reads or writes the spool: the spool's record
/// checksums then cost a fraction of the table version's time (issue 11 item
/// 2). Returns whether the CPU has them. Both give the same value, so a spool
/// written with one reads back with the other.
@discardableResult
public func installCRCAcceleration() -> Bool {
    CRC32C.accelerated = cl_crc32c_hardware()
    return CRC32C.accelerated != nil
}

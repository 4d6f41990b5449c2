import CLibc
import PosternCore

/// Writes one file of the drop directory for `postern sendmail` (the format is
/// `DropEnvelope`; the directory and why it is safe: `MailDrop`).
///
/// The file is written as `t.RANDOM` while the message streams (mode 0640: the
/// daemon's group reads it through the directory's setgid group, other users
/// cannot), and is either removed (the daemon took the message directly) or
/// synced and renamed `m.TIME.RANDOM` and the rename synced (`publish`; a user may
/// not open the directory to fsync it, so then the file system is: syncfs): only
/// a complete, durable file ever has the name the daemon takes in, and names
/// sort by submission time.
public final class DropWriter {
    public let dir: String
    let dirFD: Int32
    let fd: Int32
    let random: String
    var tmpName: String { MailDrop.writingPrefix + random }
    var done = false
    /// Bytes written so far.
    public private(set) var size: Int64 = 0

    init(dir: String, dirFD: Int32, fd: Int32, random: String) {
        self.dir = dir
        self.dirFD = dirFD
        self.fd = fd
        self.random = random
    }

    deinit {
        if !done { discard() }
        Sys.close(fd)
        Sys.close(dirFD)
    }

    public static func create(in dir: String) -> Result<DropWriter, Problem> {
        let dirFD = cl_open_directory_path(dir)
        if dirFD < 0 { return .failure("drop directory \(dir): \(Errno.current("open").text)") }
        let random = ASCII.hex(cl_random64(), width: 16) + ASCII.hex(cl_random64(), width: 16)
        let fd = cl_create_at(dirFD, MailDrop.writingPrefix + random, 0o640)
        if fd < 0 {
            let e = Errno.current("open")
            Sys.close(dirFD)
            return .failure("drop directory \(dir): cannot create a file: \(e.text)")
        }
        return .success(DropWriter(dir: dir, dirFD: dirFD, fd: fd, random: random))
    }

    public func write(_ bytes: UnsafeRawBufferPointer) -> Problem? {
        // The file is written from its start, in order: pwrite at the running size.
        guard let offset = Int(exactly: size) else { return "drop directory \(dir): the message is too large" }
        if case .failure(let e) = Sys.pwrite(fd, bytes, at: offset) { return "drop directory \(dir): \(e.text)" }
        size += Int64(bytes.count)
        return nil
    }

    public func write(_ bytes: [UInt8]) -> Problem? { bytes.withUnsafeBytes { write($0) } }

    /// Makes the file durable and gives it its final name; the message is then
    /// the daemon's to take in, and sendmail may exit 0.
    public func publish() -> Problem? {
        if case .failure(let e) = Sys.fdatasync(fd) { return "drop directory \(dir): \(e.text)" }
        let name = MailDrop.readyPrefix + ASCII.hex(UInt64(bitPattern: cl_wall_nanoseconds()), width: 16) + "." + random
        if cl_rename_at(dirFD, tmpName, name) != 0 { return "drop directory \(dir): \(Errno.current("rename").text)" }
        done = true
        if cl_sync_entry(dir, fd) != 0 { return "drop directory \(dir): \(Errno.current("fsync").text)" }
        return nil
    }

    /// Removes the file (the daemon took the message itself, or it was refused).
    public func discard() {
        guard !done else { return }
        done = true
        _ = cl_unlink_at(dirFD, tmpName)
    }
}

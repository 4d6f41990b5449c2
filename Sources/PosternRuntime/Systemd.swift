import CLibc
import CSystemd

/// The daemon's side of the service manager, through libsystemd: readiness and
/// state (sd_notify(3)), the watchdog (sd_watchdog_enabled(3)), sockets passed by
/// socket activation (sd_listen_fds(3)), and the native journal protocol
/// (sd_journal_sendv(3)). Every call is harmless when not run by systemd.
public enum Systemd {
    /// sd_notify(3) with one or more newline-separated assignments ("READY=1").
    /// Returns false when there is no service manager to tell.
    @discardableResult
    public static func notify(_ state: String) -> Bool {
        sd_notify(0, state) > 0
    }

    /// NOTIFY_SOCKET is set: `notify` has somewhere to send to.
    public static func notifySocketSet() -> Bool {
        guard let v = getenv("NOTIFY_SOCKET") else { return false }
        return v.pointee != 0
    }

    /// The watchdog interval in microseconds when systemd expects pings from this
    /// process (WATCHDOG_USEC set and WATCHDOG_PID unset or ours), else nil.
    public static func watchdogMicroseconds() -> UInt64? {
        var usec: UInt64 = 0
        return sd_watchdog_enabled(0, &usec) > 0 && usec > 0 ? usec : nil
    }

    /// The listening sockets systemd passed (LISTEN_FDS, LISTEN_FDNAMES), with
    /// their names; the variables are unset so children do not inherit them.
    public static func listenFDs() -> [(fd: Int32, name: String)] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        let n = sd_listen_fds_with_names(1, &names)
        guard n > 0 else { return [] }
        var out: [(fd: Int32, name: String)] = []
        for i in 0..<Int(n) {
            var name = "unknown"
            if let list = names, let p = list[i] {
                name = String(cString: p)
                free(p)
            }
            out.append((SD_LISTEN_FDS_START + Int32(i), name))
        }
        if let list = names { free(list) }
        return out
    }

    /// Whether stderr is the journal's stream (JOURNAL_STREAM names its device and
    /// inode, as systemd sets it for services): then entries go to the journal
    /// natively, with their fields, instead of as text lines.
    public static func stderrIsJournal() -> Bool {
        guard let v = getenv("JOURNAL_STREAM") else { return false }
        let parts = String(cString: v).utf8.split(separator: 58 /* : */)
        guard parts.count == 2, let dev = UInt64(String(decoding: parts[0], as: UTF8.self)),
              let ino = UInt64(String(decoding: parts[1], as: UTF8.self)) else { return false }
        var st = stat()
        guard fstat(2, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
    }

    /// Whether journald's native socket exists (it is looked for on every entry:
    /// journald may be restarted under a running daemon).
    public static func journalAvailable() -> Bool {
        access("/run/systemd/journal/socket", F_OK) == 0
    }

    /// sd_journal_sendv(3): one entry whose "FIELD=value" fields are `spans`'
    /// slices of `bytes` (`LogRecord.appendJournalFields`), one contiguous
    /// buffer, so every iovec points into memory that lives for the whole
    /// call. Returns 0 or a negative errno.
    public static func journalSend(_ bytes: inout [UInt8], _ spans: [(start: Int, count: Int)]) -> Int32 {
        bytes.withUnsafeMutableBytes { raw -> Int32 in
            guard let base = raw.baseAddress else { return -Int32(EINVAL) }
            let iov = spans.map { iovec(iov_base: base + $0.start, iov_len: $0.count) }
            return iov.withUnsafeBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) }
        }
    }

}

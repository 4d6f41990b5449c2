import PosternCore

/// Where every log entry goes. Every event passes through `emit`: to the
/// journal with its structured fields (sd_journal_sendv) when running under
/// systemd, else to stderr as one `key=value` line. A journal write that fails
/// falls back to stderr, so no entry is lost silently.
public final class Log {
    public enum Sink: Equatable {
        case stderr
        case journal
    }

    public var showDebug: Bool
    public private(set) var sink: Sink
    /// Drops every entry (tests that provoke thousands of failures on purpose).
    let quiet: Bool
    var journalFailures = 0
    /// The entry being written, as bytes, and its journal fields' slices: kept
    /// between entries so that logging allocates nothing once they have grown.
    var bytes: [UInt8] = []
    var spans: [(start: Int, count: Int)] = []

    public init(showDebug: Bool = false, quiet: Bool = false, sink: Sink = .stderr) {
        self.showDebug = showDebug
        self.quiet = quiet
        self.sink = sink
    }

    public func emit(_ record: LogRecord) {
        if quiet || (record.priority == .debug && !showDebug) { return }
        bytes.removeAll(keepingCapacity: true)
        if sink == .journal {
            // sd_journal_sendv succeeds silently when journald is not running at
            // all (ENOENT), so look for its socket first.
            var rc: Int32 = -2
            if Systemd.journalAvailable() {
                spans.removeAll(keepingCapacity: true)
                record.appendJournalFields(identifier: "postern", to: &bytes, spans: &spans)
                rc = Systemd.journalSend(&bytes, spans)
            }
            if rc >= 0 { return }
            journalFailures += 1
            if journalFailures == 1 {
                Sys.writeStderr(LogRecord(.warning, "the journal refused an entry; writing to stderr instead",
                                          [("error", Errno(-rc, "sd_journal_sendv").text)]).keyValueLine() + "\n")
            }
            bytes.removeAll(keepingCapacity: true)
        }
        record.appendKeyValueLine(to: &bytes)
        bytes.append(ASCII.lf)
        Sys.writeAll(2, bytes)
    }

    public func info(_ message: String, _ fields: [(String, String)] = [], id: String? = nil) {
        emit(LogRecord(.info, message, fields, messageID: id))
    }

    public func notice(_ message: String, _ fields: [(String, String)] = [], id: String? = nil) {
        emit(LogRecord(.notice, message, fields, messageID: id))
    }

    public func warning(_ message: String, _ fields: [(String, String)] = [], id: String? = nil) {
        emit(LogRecord(.warning, message, fields, messageID: id))
    }

    public func error(_ message: String, _ fields: [(String, String)] = [], id: String? = nil) {
        emit(LogRecord(.error, message, fields, messageID: id))
    }

    public func debug(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> [(String, String)] = []) {
        guard showDebug else { return }
        emit(LogRecord(.debug, message(), fields()))
    }

    public func event(_ kind: EventKind, _ priority: Priority, _ message: String, _ fields: [(String, String)]) {
        emit(LogRecord(priority, message, event: kind, fields))
    }
}

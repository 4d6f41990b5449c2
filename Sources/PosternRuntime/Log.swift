import PosternCore

/// Where every log entry goes. All events pass through `emit`, so the journald
/// sink can be added in one place; today entries are written to stderr as one
/// `key=value` line each.
public final class Log {
    public var showDebug: Bool
    /// Drops every entry (tests that provoke thousands of failures on purpose).
    let quiet: Bool

    public init(showDebug: Bool = false, quiet: Bool = false) {
        self.showDebug = showDebug
        self.quiet = quiet
    }

    public func emit(_ record: LogRecord) {
        if quiet || (record.priority == .debug && !showDebug) { return }
        Sys.writeStderr(record.keyValueLine() + "\n")
    }

    public func info(_ message: String, _ fields: [(String, String)] = []) {
        emit(LogRecord(.info, message, fields))
    }

    public func notice(_ message: String, _ fields: [(String, String)] = []) {
        emit(LogRecord(.notice, message, fields))
    }

    public func warning(_ message: String, _ fields: [(String, String)] = []) {
        emit(LogRecord(.warning, message, fields))
    }

    public func error(_ message: String, _ fields: [(String, String)] = []) {
        emit(LogRecord(.error, message, fields))
    }

    public func debug(_ message: @autoclosure () -> String, _ fields: @autoclosure () -> [(String, String)] = []) {
        guard showDebug else { return }
        emit(LogRecord(.debug, message(), fields()))
    }

    public func event(_ kind: EventKind, _ priority: Priority, _ message: String, _ fields: [(String, String)]) {
        emit(LogRecord(priority, message, event: kind, fields))
    }
}

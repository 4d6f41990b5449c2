import CLibc
import PosternCore

/// Clock readings. Scheduling uses the monotonic clock only; the wall clock is
/// for headers, logs and message age (DESIGN.md principle 6).
public enum Clock {
    /// CLOCK_MONOTONIC, nanoseconds.
    public static func monotonic() -> Int64 { cl_monotonic_ns() }

    /// CLOCK_REALTIME, seconds since the epoch.
    public static func wall() -> Int64 { cl_wall_seconds() }

    /// The current wall-clock time as an RFC 5322 date in the local time zone.
    public static func rfc5322Date() -> String { rfc5322Date(wall: wall()) }

    /// The wall-clock second `seconds` as an RFC 5322 date in the local time zone.
    public static func rfc5322Date(wall seconds: Int64) -> String {
        TraceHeader.date(seconds: seconds, utcOffset: Int(cl_utc_offset(seconds)))
    }

    public static func random() -> UInt64 { cl_random64() }

    /// "05:30:29" in the local time zone.
    public static func timeOfDay(_ seconds: Int64) -> String {
        TraceHeader.timeOfDay(seconds: seconds, utcOffset: Int(cl_utc_offset(seconds)))
    }

    /// Whether the kernel considers the wall clock synchronised (NTP).
    public static func synchronised() -> Bool { cl_clock_synchronised() != 0 }

    /// All three at once, for pure code that needs the time.
    public static func reading() -> ClockReading {
        ClockReading(wall: wall(), monotonic: monotonic(), synchronised: synchronised())
    }
}

import CLibc

/// The user database (getpwuid_r), for naming local submitters in logs and
/// `Received:` lines and for the From: that `postern sendmail` adds.
public enum LocalUsers {
    /// The login name of `uid`, nil when there is none.
    public static func name(_ uid: UInt32) -> String? {
        text { cl_user_name(uid, $0, $1) }
    }

    /// The full name from the GECOS field (up to its first comma), nil when empty.
    public static func fullName(_ uid: UInt32) -> String? {
        text { cl_user_full_name(uid, $0, $1) }
    }

    static func text(_ call: (UnsafeMutablePointer<CChar>?, Int) -> Int32) -> String? {
        var buf = [CChar](repeating: 0, count: 256)
        let n = buf.withUnsafeMutableBufferPointer { call($0.baseAddress, $0.count) }
        guard n > 0, Int(n) < buf.count else { return nil }
        return String(decoding: buf[0..<Int(n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

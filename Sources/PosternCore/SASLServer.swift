/// The receiver side of AUTH PLAIN and AUTH LOGIN (RFC 4954, RFC 4616), as a
/// pure value: fed the AUTH command's arguments and then the client's lines,
/// it returns what to send and, at the end, the credentials for the caller to
/// check against `AuthUsers` with crypt(3). It holds no socket, clock or log.
///
/// ```
/// var (sasl, step) = SASLServer.start(arguments: line.dropFirst(5))   // after "AUTH "
/// while case .reply(let r) = step { send(r); step = sasl.receive(line: nextLine()) }
/// switch step {
/// case .credentials(var user, var password): check, answer `succeeded` or `credentialsInvalid`; wipe both
/// case .failed(let r): send(r)                // the AUTH command is over
/// case .reply: break                         // not reached
/// }
/// ```
///
/// The collaborators: `SMTPReceiver` (which will own one of these while an
/// AUTH exchange runs, and decide when AUTH is allowed: RFC 4954 §4 forbids it
/// after a successful AUTH and during a transaction, 503 5.5.1), the line
/// framer (which must let AUTH lines reach `maxLineLength`), and `AuthUsers`.
///
/// Secrets: every buffer that held decoded client data is zeroed before it is
/// dropped (`SASL.wipe`), the base64 decoder writes into one buffer reserved
/// at its full size (no reallocation leaves a partial copy behind), and the
/// machine keeps nothing of the password: it is handed out once in
/// `.credentials` and the machine is then finished. The caller wipes the
/// arrays it gets and its own copy of the line. No `description` shows a
/// password.
///
/// Bounds: at most two client lines per exchange (LOGIN: user name and
/// password), each at most `maxLineLength` octets; the machine keeps at most
/// a 255-octet user name between them.
public struct SASLServer: Sendable, CustomStringConvertible {
    /// The mechanisms offered (EHLO `AUTH PLAIN LOGIN`, RFC 4954 §3).
    public enum Mechanism: Equatable, Sendable, CustomStringConvertible {
        /// RFC 4616.
        case plain
        /// draft-murchison-sasl-login-00: not an RFC, but what many devices
        /// (cameras, printers, Outlook) speak.
        case login

        public var description: String {
            switch self {
            case .plain: return "PLAIN"
            case .login: return "LOGIN"
            }
        }
    }

    /// What the caller does next.
    public enum Step: Equatable, Sendable, CustomStringConvertible {
        /// Send this (a 334 challenge) and feed the client's next line to
        /// `receive(line:)`.
        case reply(Reply)
        /// The exchange is complete: check these and answer `succeeded` (235)
        /// or `credentialsInvalid` (535) yourself; then wipe both arrays.
        /// `user` is the authcid, 1–255 octets of valid UTF-8 without NUL;
        /// `password` is 1–255 octets without NUL.
        case credentials(user: [UInt8], password: [UInt8])
        /// Send this; the AUTH command has failed and the exchange is over.
        /// A 535 here (an authzid other than the authcid) should be handled
        /// like a wrong password: delayed and counted.
        case failed(Reply)

        /// For logs: the password is never shown.
        public var description: String {
            switch self {
            case .reply(let r): return "reply \(r)"
            case .credentials(let user, _): return "credentials user=\(ASCII.printable(user, limit: 255)) password=********"
            case .failed(let r): return "failed \(r)"
            }
        }
    }

    /// Named for what has been sent.
    enum State: Equatable, Sendable {
        /// `334 ` sent after AUTH PLAIN without an initial response.
        case sentPlainChallenge
        /// `334 VXNlcm5hbWU6` ("Username:") sent.
        case sentUsernamePrompt
        /// `334 UGFzc3dvcmQ6` ("Password:") sent; the user name so far.
        case sentPasswordPrompt(user: [UInt8])
        /// Credentials handed out or a failure sent.
        case finished
    }

    /// RFC 4954 §4: an AUTH command line and each response line may be up
    /// to 12,288 octets, counted like RFC 5321 §4.5.3.1.4 counts a command
    /// line: including the CRLF.
    public static let maxLineLength = 12_288
    /// RFC 4616 §2: authzid, authcid and passwd are 1*SAFE, and a server MUST
    /// accept up to 255 octets of each. Longer ones are refused as malformed
    /// (no authcid in `AuthUsers` is longer, and crypt(3) gains nothing from
    /// longer passwords).
    public static let maxFieldLength = 255

    // MARK: replies (RFC 4954 §6 codes, Postfix's texts where RFC 4954 has none)

    /// The caller's answer to credentials that check (RFC 4954 §6).
    public static let succeeded = Reply(235, "2.7.0", "Authentication successful")
    /// The caller's answer to credentials that do not check, or an unknown or
    /// locked user: all three the same, so a client learns nothing about which
    /// users exist (RFC 4954 §6: "Authentication credentials invalid").
    public static let credentialsInvalid = Reply(535, "5.7.8", "Error: authentication failed")
    /// The caller's answer when the check itself could not run (crypt(3)
    /// failed for lack of memory, say): RFC 4954 §6 "Temporary authentication
    /// failure".
    public static let temporaryFailure = Reply(454, "4.7.0", "Temporary authentication failure")
    /// RFC 4954 §4: a "*" line cancels the exchange; the server MUST reject
    /// the AUTH command with 501 (enhanced code 5.7.0).
    public static let cancelled = Reply(501, "5.7.0", "Authentication aborted")
    /// RFC 4954 §4: a response that cannot be base64-decoded MUST be rejected
    /// with 501 (5.5.2).
    public static let invalidBase64 = Reply(501, "5.5.2", "Invalid base64 data in response")
    /// RFC 4616 §2 / draft-murchison-sasl-login: a decoded response that is
    /// not what the mechanism defines (wrong number of NULs, an empty or
    /// over-long field, an identity that is not UTF-8): 501 5.5.2 like bad
    /// base64, as Postfix does.
    public static let malformed = Reply(501, "5.5.2", "Malformed authentication data")
    /// RFC 4954 §4 syntax: "AUTH" SP sasl-mech [SP initial-response].
    public static let syntax = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
    /// RFC 4954 §4: an unsupported mechanism is rejected with 504 (5.5.4).
    public static let unknownMechanism = Reply(504, "5.5.4", "Unrecognized authentication type; use PLAIN or LOGIN")
    /// RFC 4954 §6: "500 5.5.6 Authentication Exchange line is too long".
    public static let lineTooLong = Reply(500, "5.5.6", "Authentication exchange line is too long")
    /// RFC 4616 §2: an authzid must be one the authcid may act as; Postern
    /// lets a user act only as itself. 535 5.7.8 as for any refused
    /// credentials (RFC 4954 §6; Cyrus SASL's authorization failure reaches
    /// Postfix's client as 535 5.7.8 too), with its own text so that the
    /// client's administrator can see why.
    public static let authzidRefused = Reply(535, "5.7.8",
        "Error: authentication failed: acting as another user (authorization identity) is not supported")
    /// A line fed after the exchange is over (a caller's mistake; never a trap).
    public static let notInProgress = Reply(503, "5.5.1", "Error: no authentication exchange in progress")

    /// draft-murchison-sasl-login-00 §2: the challenges "Username:" and
    /// "Password:", base64-encoded; 334 carries no enhanced code (RFC 4954 §4:
    /// `continue-req = "334" SP [base64] CRLF`).
    static let usernamePrompt = Reply(334, nil, "VXNlcm5hbWU6")
    static let passwordPrompt = Reply(334, nil, "UGFzc3dvcmQ6")
    /// RFC 4954 §4: PLAIN sends no challenge data: "334 " and an empty text.
    static let emptyChallenge = Reply(334, nil, "")

    /// nil when the AUTH command named no mechanism we offer.
    public private(set) var mechanism: Mechanism?
    private(set) var state: State

    private init(mechanism: Mechanism?, state: State) {
        self.mechanism = mechanism
        self.state = state
    }

    /// For logs: the mechanism and what was sent last (never a secret; the
    /// user name is not shown either).
    public var description: String {
        let name = mechanism.map { $0.description } ?? "none"
        switch state {
        case .sentPlainChallenge: return "AUTH \(name) sentPlainChallenge"
        case .sentUsernamePrompt: return "AUTH \(name) sentUsernamePrompt"
        case .sentPasswordPrompt: return "AUTH \(name) sentPasswordPrompt"
        case .finished: return "AUTH \(name) finished"
        }
    }

    /// The exchange has ended (credentials handed out or a failure sent):
    /// the caller goes back to reading commands.
    public var isFinished: Bool { state == .finished }

    // MARK: events

    /// The AUTH command. `arguments` are the bytes after "AUTH " on the
    /// command line (without CRLF): a mechanism name, case-insensitive
    /// (RFC 4954 §3, RFC 4422 §3.1), and an optional initial response
    /// (RFC 4954 §4), "=" standing for an empty one. Blanks around and between
    /// them are tolerated, as Postfix does. Returns the machine and the first
    /// step; when that step is not `.reply`, the machine is already finished.
    public static func start(arguments: ArraySlice<UInt8>) -> (SASLServer, Step) {
        var machine = SASLServer(mechanism: nil, state: .finished)
        // "AUTH " + arguments + CRLF (RFC 4954 §4).
        if arguments.count > maxLineLength - 7 {
            return (machine, .failed(lineTooLong))
        }
        var words: [ArraySlice<UInt8>] = []
        var rest = ASCII.trimmed(arguments)
        while !rest.isEmpty {
            if words.count == 2 { return (machine, .failed(syntax)) }
            let end = rest.firstIndex(where: ASCII.isSpace) ?? rest.endIndex
            words.append(rest[rest.startIndex..<end])
            rest = rest[end...].drop(while: ASCII.isSpace)
        }
        guard let name = words.first else { return (machine, .failed(syntax)) }
        if ASCII.equalsIgnoringCase(name, "PLAIN".utf8) {
            machine.mechanism = .plain
        } else if ASCII.equalsIgnoringCase(name, "LOGIN".utf8) {
            machine.mechanism = .login
        } else {
            return (machine, .failed(unknownMechanism))
        }
        let mechanism: Mechanism = machine.mechanism ?? .plain
        guard words.count == 2 else {
            // No initial response: the server's first challenge (RFC 4954 §4).
            switch mechanism {
            case .plain:
                machine.state = .sentPlainChallenge
                return (machine, .reply(emptyChallenge))
            case .login:
                machine.state = .sentUsernamePrompt
                return (machine, .reply(usernamePrompt))
            }
        }
        let response = words[1]
        // RFC 4954 §4: an initial response of zero length is sent as "=".
        let empty = response.count == 1 && response.first == ASCII.equals
        guard var decoded = empty ? [] : Base64.decodeStrict(response) else {
            return (machine, .failed(invalidBase64))
        }
        defer { SASL.wipe(&decoded) }
        let step: Step
        switch mechanism {
        case .plain:
            step = machine.finish(plain: decoded)
        case .login:
            // LOGIN has no initial response in its draft, but clients send the
            // user name there (Outlook, some cameras); then ask for the password.
            step = machine.gotUsername(decoded)
        }
        return (machine, step)
    }

    /// One line from the client while the exchange runs, without its CRLF.
    public mutating func receive(line: ArraySlice<UInt8>) -> Step {
        if state == .finished { return .failed(Self.notInProgress) }
        if line.count > Self.maxLineLength - 2 { return receiveTooLongLine() }
        // RFC 4954 §4: "*" alone cancels; the AUTH command is rejected with 501.
        if line.count == 1 && line.first == 42 /* * */ {
            state = .finished
            return .failed(Self.cancelled)
        }
        guard var decoded = Base64.decodeStrict(line) else {
            state = .finished
            return .failed(Self.invalidBase64)
        }
        switch state {
        case .sentPlainChallenge:
            defer { SASL.wipe(&decoded) }
            return finish(plain: decoded)
        case .sentUsernamePrompt:
            return gotUsername(decoded)
        case .sentPasswordPrompt(let user):
            state = .finished
            guard Self.isField(decoded, identity: false) else {
                SASL.wipe(&decoded)
                return .failed(Self.malformed)
            }
            // Handed out as is: the caller owns and wipes this buffer.
            return .credentials(user: user, password: decoded)
        case .finished:
            SASL.wipe(&decoded)
            return .failed(Self.notInProgress)
        }
    }

    /// The framer found a line longer than `maxLineLength` (and skipped it):
    /// RFC 4954 §6, 500 5.5.6, and the exchange ends.
    public mutating func receiveTooLongLine() -> Step {
        if state == .finished { return .failed(Self.notInProgress) }
        state = .finished
        return .failed(Self.lineTooLong)
    }

    // MARK: mechanisms

    /// RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd.
    /// The exchange ends here either way.
    private mutating func finish(plain message: [UInt8]) -> Step {
        state = .finished
        guard let first = message.firstIndex(of: 0) else { return .failed(Self.malformed) }
        let afterFirst = first + 1
        guard let second = message[afterFirst...].firstIndex(of: 0) else { return .failed(Self.malformed) }
        let authzid = message[..<first]
        let authcid = message[afterFirst..<second]
        let passwd = message[(second + 1)...]
        // A third NUL would be inside passwd: SAFE excludes NUL (RFC 4616 §2).
        guard authzid.count <= Self.maxFieldLength,
              authzid.isEmpty || Self.isValidUTF8(authzid),
              Self.isField(authcid, identity: true),
              Self.isField(passwd, identity: false) else {
            return .failed(Self.malformed)
        }
        // RFC 4616 §2: with an authzid, the server checks that the authcid may
        // act as it. Here a user may act only as itself.
        if !authzid.isEmpty && !authzid.elementsEqual(authcid) {
            return .failed(Self.authzidRefused)
        }
        return .credentials(user: Array(authcid), password: Array(passwd))
    }

    /// LOGIN's user name, from the initial response or the first line.
    private mutating func gotUsername(_ user: [UInt8]) -> Step {
        guard Self.isField(user, identity: true) else {
            state = .finished
            return .failed(Self.malformed)
        }
        state = .sentPasswordPrompt(user: user)
        return .reply(Self.passwordPrompt)
    }

    /// 1–255 octets without NUL; an identity must also be UTF-8 (RFC 4616 §2:
    /// SAFE is any UTF-8 character but NUL). A password is not held to UTF-8:
    /// crypt(3) compares bytes, and a device that sends Latin-1 is refused by
    /// the check, not by a 501 that would name a different problem.
    static func isField<C: Collection>(_ bytes: C, identity: Bool) -> Bool where C.Element == UInt8 {
        guard !bytes.isEmpty, bytes.count <= maxFieldLength, !bytes.contains(0) else { return false }
        return !identity || isValidUTF8(bytes)
    }

    // MARK: encodings

    /// Well-formed UTF-8 (RFC 3629 §4): no overlong forms, no surrogates,
    /// nothing above U+10FFFF, no truncated sequence.
    static func isValidUTF8<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        var it = bytes.makeIterator()
        while let b = it.next() {
            if b < 0x80 { continue }
            let more: Int
            var low: UInt8 = 0x80
            var high: UInt8 = 0xBF
            switch b {
            case 0xC2...0xDF: more = 1
            case 0xE0: more = 2; low = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: more = 2
            case 0xED: more = 2; high = 0x9F
            case 0xF0: more = 3; low = 0x90
            case 0xF1...0xF3: more = 3
            case 0xF4: more = 3; high = 0x8F
            default: return false
            }
            for i in 0..<more {
                guard let c = it.next() else { return false }
                if i == 0 {
                    guard c >= low && c <= high else { return false }
                } else {
                    guard c >= 0x80 && c <= 0xBF else { return false }
                }
            }
        }
        return true
    }
}

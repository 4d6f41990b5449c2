import Testing
@testable import PosternCore

/// Each certificate failure in words a person can act on (issue 8 item 2).
@Suite("Certificate problems in words")
struct CertificateProblemTests {
    let wall: Int64 = 1_796_000_000   // 2026-11-30

    func text(_ r: CertificateProblem.Report, synchronised: Bool = true) -> CertificateProblem {
        CertificateProblem(r, host: "smtp.example.com", wall: wall, synchronised: synchronised)
    }

    @Test("expired, not yet valid, self-signed, unknown issuer, wrong host name, fingerprint mismatch")
    func words() {
        let subject = "CN=smtp.example.com"
        #expect(text(.init(verifyError: 10, subject: subject, notAfter: 1_700_000_000)).text
                == "the certificate expired on 2023-11-14 22:13 UTC (CN=smtp.example.com)")
        #expect(text(.init(verifyError: 9, subject: subject, notBefore: 1_900_000_000)).text
                == "the certificate is not valid yet until 2030-03-17 17:46 UTC (CN=smtp.example.com)")
        #expect(text(.init(verifyError: 18, subject: subject, fingerprint: "sha256:ab")).text.hasPrefix("the certificate is self-signed (CN=smtp.example.com): trust it with ca_file, or pin its key with fingerprint = sha256:ab"))
        #expect(text(.init(verifyError: 20, issuer: "CN=Evil CA")).text.hasPrefix("unknown issuer: CN=Evil CA is not among the trusted CAs"))
        #expect(text(.init(verifyError: 62, subject: "CN=other.example")).text
                == "wrong host name: the certificate is not for smtp.example.com (CN=other.example)")
        #expect(text(.init(pinMismatch: true, fingerprint: "sha256:00")).text.hasPrefix("fingerprint mismatch: the upstream's public key is sha256:00"))
        #expect(text(.init(verifyError: 10, depth: 1)).text == "a CA certificate in the upstream's chain expired on an unknown date")
        #expect(text(.init(handshakeText: "TLS handshake: unsupported protocol")).text == "TLS handshake: unsupported protocol")
        #expect(text(.init(verifyError: 23, verifyText: "certificate revoked")).text == "certificate check failed: certificate revoked (X509 error 23 at depth 0)")
    }

    @Test("A board without a real-time clock (1970): 'not yet valid' says the clock is not set and waits for it")
    func clockNotSet() {
        let p = CertificateProblem(.init(verifyError: 9, notBefore: 1_700_000_000), host: "h", wall: 60, synchronised: false)
        #expect(p.waitForClock)
        #expect(p.text.contains("this system's clock is not synchronised (it reads 1970-01-01 00:01 UTC)"))
        let q = CertificateProblem(.init(verifyError: 9, notBefore: 1_900_000_000), host: "h", wall: wall, synchronised: true)
        #expect(!q.waitForClock)
        let r = CertificateProblem(.init(verifyError: 10), host: "h", wall: 60, synchronised: false)
        #expect(!r.waitForClock, "only 'not yet valid' is explained by a clock in the past")
    }

    @Test("Dates far from now never trap", arguments: [Int64.min, -1, 0, Int64.max])
    func extremeDates(seconds: Int64) {
        _ = CertificateProblem.date(seconds)
    }

    @Test("The fingerprint text round-trips through the config parser")
    func fingerprintText() {
        let digest = (0..<32).map { UInt8($0 * 7 & 255) }
        let text = CertificateProblem.fingerprintText(digest)
        #expect(text.hasPrefix("sha256:0007"))
        #expect(ConfigParser.fingerprint(text) == digest)
        #expect(ConfigParser.fingerprint("SHA256:" + text.dropFirst(7).uppercased()) == digest)
        #expect(ConfigParser.fingerprint("sha256:00:07") == nil)
        #expect(ConfigParser.fingerprint("md5:00") == nil)
    }
}

@Suite("[upstream] TLS and AUTH settings (issue 8)")
struct UpstreamSecurityConfigTests {
    func upstream(_ lines: String) -> Result<Config, ConfigError> {
        parseConfig("[upstream]\nhost = smtp.example.com\n" + lines)
    }

    @Test("Port 465 means implicit TLS unless tls is written (RFC 8314 §3.3)")
    func port465() throws {
        let c = try upstream("port = 465\n").get()
        #expect(c.upstreams[0].tls == .implicit)
        #expect(c.derived.contains("upstream.tls"))
        #expect(try upstream("port = 465\ntls = starttls\n").get().upstreams[0].tls == .starttls)
        #expect(try upstream("port = 587\n").get().upstreams[0].tls == .starttls)
    }

    @Test("Every TLS and AUTH key, read")
    func allKeys() throws {
        let pin = "sha256:" + String(repeating: "ab", count: 32)
        let c = try upstream("""
            tls = starttls
            verify = yes
            ca_file = ca.pem
            fingerprint = \(pin)
            client_cert = client.pem
            client_key = /etc/postern/client.key
            auth = xoauth2
            username = me@gmail.com
            password_file = secret

            """).get().upstreams[0]
        #expect(c.caFile == "/etc/postern/ca.pem")
        #expect(c.fingerprint == [UInt8](repeating: 0xab, count: 32))
        #expect(c.clientCert == "/etc/postern/client.pem" && c.clientKey == "/etc/postern/client.key")
        #expect(c.auth == .xoauth2 && c.username == "me@gmail.com")
        #expect(c.secret == .file("/etc/postern/secret"))
    }

    @Test("A username alone means auth = auto")
    func autoAuth() throws {
        let c = try upstream("username = u\npassword_file = /s\n").get().upstreams[0]
        #expect(c.auth == .auto)
    }

    @Test("Conflicts and gaps name the line", arguments: [
        ("auth = plain\n", 3, "needs 'username'"),
        ("username = u\n", 3, "neither password_file nor password_command"),
        ("password_file = /s\n", 3, "without 'username'"),
        ("auth = none\nusername = u\npassword_file = /s\n", 3, "auth = none"),
        ("client_cert = /c\n", 3, "client_cert and client_key go together"),
        ("tls = none\nverify = no\n", 4, "no effect with tls = none"),
        ("verify = no\nfingerprint = sha256:\(String(repeating: "0", count: 64))\n", 4, "contradict"),
        ("verify = maybe\n", 3, "not yes or no"),
        ("fingerprint = ab:cd\n", 3, "sha256:"),
        ("auth = cram-md5\n", 3, "not one of"),
        ("username = a\u{7}b\n", 3, "control characters"),
    ])
    func errors(lines: String, line: Int, fragment: String) {
        switch upstream(lines) {
        case .success: Issue.record("accepted: \(lines)")
        case .failure(let e):
            #expect(e.line == line)
            #expect(e.message.contains(fragment), "\(e.message)")
        }
    }
}

import Testing
@testable import PosternCore

private func mailbox(_ s: String) -> Mailbox {
    Mailbox.parse(Array(s.utf8)[...], allowNull: true)!
}

@Suite("Where a failure notice goes (RFC 5321 §3.6.3, §4.5.5, §6.1)")
struct NoticePolicyTests {
    let admin = mailbox("admin@example.com")
    var withPostmaster: NoticePolicy { NoticePolicy(postmaster: admin, hostname: "RaspberryPi") }
    let withoutPostmaster = NoticePolicy(postmaster: nil, hostname: "raspberrypi")

    @Test("A real remote sender gets the notice (RFC 5321 §6.1: to the reverse-path)",
          arguments: ["joe@example.net", "Ops@Mail.Example.ORG", "x@sub.raspberrypi.example"])
    func remoteSender(sender: String) {
        #expect(withPostmaster.destination(sender: mailbox(sender), failedMessageIsNotice: false)
                == .sender(mailbox(sender)))
        #expect(withoutPostmaster.destination(sender: mailbox(sender), failedMessageIsNotice: false)
                == .sender(mailbox(sender)))
    }

    @Test("An empty, domain-less, local or unroutable sender: the postmaster gets it (RFC 5321 §4.5.5)",
          arguments: ["", "postmaster", "root@raspberrypi", "root@RASPBERRYPI",
                      "pi@localhost", "pi@LocalHost", "scanner@nas", "printer@[192.168.1.5]",
                      "x@[IPv6:::1]"])
    func localSender(sender: String) {
        #expect(withPostmaster.destination(sender: mailbox(sender), failedMessageIsNotice: false) == .postmaster(admin))
    }

    @Test("The same without a postmaster: logged only", arguments: ["", "postmaster", "root@raspberrypi", "pi@localhost"])
    func localSenderNoPostmaster(sender: String) {
        #expect(withoutPostmaster.destination(sender: mailbox(sender), failedMessageIsNotice: false)
                == .logOnly(.noPostmaster))
    }

    @Test("Never a notice about a notice (RFC 5321 §3.6.3), whoever sent it",
          arguments: ["", "joe@example.net", "root@raspberrypi"])
    func noticeAboutNotice(sender: String) {
        #expect(withPostmaster.destination(sender: mailbox(sender), failedMessageIsNotice: true)
                == .logOnly(.failedMessageIsNotice))
        #expect(withoutPostmaster.destination(sender: mailbox(sender), failedMessageIsNotice: true)
                == .logOnly(.failedMessageIsNotice))
    }

    @Test("The strict reading: a null reverse-path counts as a notice (RFC 5321 §6.1)")
    func strictReading() {
        let null = Mailbox.null
        #expect(withPostmaster.destination(sender: null, failedMessageIsNotice: null.isNull)
                == .logOnly(.failedMessageIsNotice))
    }

    @Test("The local domains are the host name (lower-cased) and localhost")
    func localDomains() {
        #expect(withPostmaster.localDomains == [Array("localhost".utf8), Array("raspberrypi".utf8)])
        #expect(NoticePolicy(postmaster: nil, hostname: "").localDomains == [Array("localhost".utf8)])
        let fqdn = NoticePolicy(postmaster: admin, hostname: "gateway.example.org")
        #expect(fqdn.destination(sender: mailbox("cron@gateway.example.org"), failedMessageIsNotice: false)
                == .postmaster(admin))
        #expect(fqdn.destination(sender: mailbox("cron@other.example.org"), failedMessageIsNotice: false)
                == .sender(mailbox("cron@other.example.org")))
    }
}

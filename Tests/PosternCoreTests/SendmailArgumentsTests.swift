import Testing
@testable import PosternCore

@Suite("sendmail command line (Postfix sendmail(1), POSIX getopt)")
struct SendmailArgumentsTests {
    func parsed(_ args: [String], programName: String = "sendmail") -> SendmailArguments? {
        guard case .success(let a) = SendmailArguments.parse(args, programName: programName) else { return nil }
        return a
    }

    func problem(_ args: [String], programName: String = "sendmail") -> String? {
        guard case .failure(let p) = SendmailArguments.parse(args, programName: programName) else { return nil }
        return p.text
    }

    @Test("cron's call: -FCronDaemon -i -B8BITMIME -oem root")
    func cron() throws {
        let a = try #require(parsed(["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]))
        #expect(a.mode == .deliver)
        #expect(a.fullName == "CronDaemon")
        #expect(a.dotEndsInput == false)
        #expect(a.bodyType == .eightBitMIME)
        #expect(a.recipients == ["root"])
        #expect(a.extractRecipients == false)
        #expect(a.sender == nil)
    }

    @Test("cronie's call: -FCronDaemon -i -odi -oem -oi -t -f root")
    func cronie() throws {
        let a = try #require(parsed(["-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"]))
        #expect(a.extractRecipients)
        #expect(a.sender == "root")
        #expect(a.recipients.isEmpty)
        #expect(!a.dotEndsInput)
    }

    @Test("mail(1)'s calls: -i -- root, and -i -t")
    func mailx() throws {
        let a = try #require(parsed(["-i", "--", "root"]))
        #expect(a.recipients == ["root"])
        #expect(!a.dotEndsInput)
        let t = try #require(parsed(["-oi", "-t"]))
        #expect(t.extractRecipients && !t.dotEndsInput && t.recipients.isEmpty)
    }

    @Test("Flags bundle, and a value takes the rest of its word or the next word (getopt)", arguments: [
        (["-tif", "a@b"], "a@b"),
        (["-tifa@b"], "a@b"),
        (["-ti", "-f", "a@b"], "a@b"),
        (["-ti", "-r", "a@b"], "a@b"),
        (["-tira@b"], "a@b"),
    ])
    func bundling(args: [String], sender: String) throws {
        let a = try #require(parsed(args))
        #expect(a.extractRecipients && !a.dotEndsInput)
        #expect(a.sender == sender)
    }

    @Test("A value is taken whatever it looks like: -f -t sets the sender \"-t\"")
    func valueLooksLikeOption() throws {
        let a = try #require(parsed(["-f", "-t", "root"]))
        #expect(a.sender == "-t")
        #expect(!a.extractRecipients)
        #expect(a.recipients == ["root"])
    }

    @Test("The null sender: -f '' and -f '<>'; one pair of angle brackets is removed", arguments: [
        (["-f", "", "root"], ""),
        (["-f", "<>", "root"], ""),
        (["-f<>", "root"], ""),
        (["-f", "<alerts@example.com>", "root"], "alerts@example.com"),
        (["-f", " <a@b> ", "root"], "a@b"),
        (["-f", "a@b", "-r", "c@d", "root"], "c@d"),
    ])
    func nullSender(args: [String], sender: String) throws {
        #expect(parsed(args)?.sender == sender)
    }

    @Test("Options end at the first recipient, at -, and after --; later words are recipients")
    func optionsEnd() throws {
        #expect(parsed(["root", "-t"])?.recipients == ["root", "-t"])
        #expect(parsed(["root", "-t"])?.extractRecipients == false)
        #expect(parsed(["-i", "--", "-t", "--"])?.recipients == ["-t", "--"])
        #expect(parsed(["-", "-t"])?.recipients == ["-", "-t"])
        #expect(parsed(["-i", "", "x"])?.recipients == ["", "x"])
    }

    @Test("Modes: -bs, -bp, -bi, -I, -bm, -bh, -q and its forms", arguments: [
        (["-bs"], SendmailArguments.Mode.smtpSession),
        (["-bp"], .listQueue),
        (["-bi"], .initAliases),
        (["-I"], .initAliases),
        (["-bh"], .hostStatus),
        (["-bH"], .hostStatus),
        (["-q"], .flushQueue),
        (["-q30m"], .flushQueue),
        (["-qRexample.com"], .flushQueue),
        (["-qSexample.com"], .flushQueue),
        (["-qIABC123"], .flushQueue),
        (["-q", "-v"], .flushQueue),
        (["-bp", "-bm", "root"], .deliver),
        (["-b", "s"], .smtpSession),
    ])
    func modes(args: [String], mode: SendmailArguments.Mode) throws {
        #expect(parsed(args)?.mode == mode)
    }

    @Test("Called as mailq or newaliases, the mode follows the name; options still override it")
    func programNames() throws {
        #expect(parsed([], programName: "/usr/bin/mailq")?.mode == .listQueue)
        #expect(parsed([], programName: "newaliases")?.mode == .initAliases)
        #expect(parsed(["-bm", "root"], programName: "mailq")?.mode == .deliver)
        #expect(problem([], programName: "/usr/sbin/sendmail") != nil)
    }

    @Test("Traditional options are accepted and ignored, with and without attached values", arguments: [
        ["-oem", "root"], ["-oee", "root"], ["-oep", "root"], ["-oeq", "root"], ["-oew", "root"],
        ["-odi", "root"], ["-odb", "root"], ["-odq", "root"], ["-oQ/var/spool/mqueue", "root"],
        ["-o7", "root"], ["-o8", "root"], ["-om", "root"], ["-oAaliases", "root"], ["-o", "em", "root"],
        ["-B", "8BITMIME", "root"], ["-B7BIT", "root"], ["-h", "17", "root"], ["-h17", "root"],
        ["-L", "label", "root"], ["-n", "root"], ["-N", "never", "root"], ["-Nsuccess,failure", "root"],
        ["-R", "hdrs", "root"], ["-V", "envid", "root"], ["-X", "/tmp/log", "root"], ["-U", "root"],
        ["-G", "root"], ["-Am", "root"], ["-Ac", "root"], ["-A", "m", "root"], ["-d0.1", "root"],
        ["-d", "21.12", "root"], ["-m", "root"], ["-x", "root"], ["-c", "root"], ["-em", "root"],
        ["-pUUCP:host", "root"], ["-O", "DeliveryMode=b", "root"], ["-XV", "root"], ["-oi", "-v", "-v", "root"],
    ])
    func ignored(args: [String]) throws {
        let a = try #require(parsed(args))
        #expect(a.mode == .deliver)
        #expect(a.recipients == ["root"])
        #expect(a.sender == nil && a.fullName == nil && !a.extractRecipients)
    }

    @Test("-v counts, -C names the configuration file, -F the full name")
    func values() throws {
        let a = try #require(parsed(["-v", "-vv", "-C", "/etc/postern/other.conf", "-F", "Backup Job", "root"]))
        #expect(a.verbose == 3)
        #expect(a.configFile == "/etc/postern/other.conf")
        #expect(a.fullName == "Backup Job")
        #expect(parsed(["-C/x.conf", "-bp"])?.configFile == "/x.conf")
    }

    @Test("An unknown option is a usage error that names it", arguments: [
        (["-z", "root"], "unknown option -z"),
        (["-tzi", "root"], "unknown option -z in \"-tzi\""),
        (["-\u{1}", "root"], "unknown option -?"),
        (["-é", "root"], "unknown option -é"),
    ])
    func unknown(args: [String], text: String) throws {
        #expect(problem(args) == text)
    }

    @Test("An option without its value is a usage error that names it", arguments: [
        (["-f"], "-f"), (["-tif"], "-f"), (["root", "-F"], nil), (["-F"], "-F"), (["-C"], "-C"),
        (["-o"], "-o"), (["-B"], "-B"), (["-b"], "-b"), (["-r"], "-r"), (["-ti", "-q", "-N"], "-N"),
    ] as [([String], String?)])
    func missingValue(args: [String], option: String?) throws {
        if let option {
            #expect(problem(args) == "option \(option) needs a value")
        } else {
            #expect(parsed(args)?.recipients == ["root", "-F"])
        }
    }

    @Test("Wrong values and unsupported modes are usage errors that name the option", arguments: [
        (["-B", "binary", "root"], "-B"),
        (["-bd"], "-bd"),
        (["-bl"], "-bl"),
        (["-bv", "root"], "-bv"),
        (["-bz"], "-bz"),
        (["-b", ""], "-b"),
        (["-qX"], "-qX"),
        (["-oA", "root"], "-oA"),
    ])
    func wrongValues(args: [String], option: String) throws {
        let text = try #require(problem(args))
        #expect(text.contains(option))
    }

    @Test("Conflicts Postfix refuses: -t outside delivery, recipients where a mode takes none, no recipients at all")
    func conflicts() throws {
        #expect(problem(["-bp", "-t"])?.contains("-t") == true)
        #expect(problem(["-bp", "root"])?.contains("root") == true)
        #expect(problem(["-q", "root"])?.contains("root") == true)
        #expect(problem(["-bs", "root"]) != nil)
        #expect(problem(["-i"])?.contains("-t") == true)
        #expect(problem([]) != nil)
        #expect(parsed(["-t"]) != nil)
    }

    @Test("Words of any text never trap, and replacement characters are kept as given")
    func anyText() throws {
        let odd = String(decoding: [0xFF, 0xFE, 0x41], as: UTF8.self)
        #expect(parsed(["-f", odd, odd])?.sender == odd)
        #expect(problem(["-" + odd]) != nil)
        #expect(parsed(["-F" + odd, "x"])?.fullName == odd)
    }
}

@testable import PosternCore

// sendmail's command line (SendmailArguments.parse) for any argv: the input
// after its first byte, split at NUL into words (argv cannot hold a NUL; any
// other bytes can, and become String as the caller makes them).
//
// Input: one byte choosing the program name (sendmail, mailq, newaliases, a
// path), then the words.
//
// Checked: no trap; the same words give the same result; a success keeps the
// checks Postfix makes (-t only when delivering, no recipients in a mode that
// takes none, someone to deliver to), and its recipients are the words after
// the options, as given; a failure says something; after "--" every word is a
// recipient.

let programNames = ["sendmail", "mailq", "newaliases", "/usr/sbin/sendmail"]

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let program = programNames[Int(input.byte()) % programNames.count]
    let rest = input.rest()
    var words: [String] = []
    if !rest.isEmpty {
        for word in rest.split(separator: 0, omittingEmptySubsequences: false) {
            words.append(String(decoding: word, as: UTF8.self))
        }
    }

    let first = SendmailArguments.parse(words, programName: program)
    let again = SendmailArguments.parse(words, programName: program)
    require(first == again, "the same words parsed differently")
    switch first {
    case .success(let a):
        require(!a.extractRecipients || a.mode == .deliver, "-t outside delivery")
        require(a.mode == .deliver || a.recipients.isEmpty, "recipients in a mode that takes none")
        require(a.mode != .deliver || !a.recipients.isEmpty || a.extractRecipients, "delivery to no one")
        require(a.recipients.count <= words.count && Array(words.suffix(a.recipients.count)) == a.recipients,
                "the recipients are not the words after the options")
        require(a.verbose >= 0 && a.verbose <= data.count, "a -v count beyond the input")
    case .failure(let p):
        require(!p.text.isEmpty, "a problem without text")
    }

    // After "--" everything is a recipient.
    if program == "sendmail" {
        switch SendmailArguments.parse(["--"] + words, programName: program) {
        case .success(let a):
            require(a.recipients == words && a.mode == .deliver, "-- did not make every word a recipient")
        case .failure:
            require(words.isEmpty, "-- followed by words refused")
        }
    }
}

/// Writes one header field (or one line of plain text) folded so that no line
/// exceeds the limits of RFC 5322 §2.1.1: lines are kept to 78 octets where a
/// blank allows it, and never exceed 998.
///
/// Folding inserts CRLF before a run of blanks, so the next line begins with
/// that blank and unfolding (RFC 5322 §2.2.3: remove each CRLF that is followed
/// by WSP) gives the value back exactly. RFC 5322 allows folding wherever FWS or
/// CFWS may appear, which is at every blank of a structured field, inside
/// quoted-strings and comments included (§3.2.2, §3.2.4). A run of more than 998
/// octets without a blank cannot be folded; it is broken by inserting CRLF and a
/// space, the same break `DataEncoder` makes in a long body line, which changes
/// the value by one space and is the only way to keep the line legal.
///
/// Used by `FromRewriter` (the new From: and Reply-To:) and `DeliveryReport`
/// (Diagnostic-Code: and the lines of its text part).
enum HeaderFolding {
    /// RFC 5322 §2.1.1: "Each line of characters MUST be no more than 998
    /// characters ... excluding the CRLF."
    static let maxLine = 998
    /// RFC 5322 §2.1.1: "... SHOULD be no more than 78 characters".
    static let preferredLine = 78
    /// Longest run of blanks kept by `sanitized(_:)`, so a fold point always
    /// has a word within reach and no folded line is blanks only (obsolete
    /// syntax, RFC 5322 §4.2).
    static let maxBlankRun = 64

    /// Appends `prefix` (e.g. "From: "), then `value` folded, then CRLF.
    ///
    /// `value` must hold no CR or LF (see `sanitized`). Folding only ever
    /// happens before a blank that follows some non-blank text on the line, so
    /// the first line always carries `prefix` and the first word.
    static func append<P: Collection, V: Collection>(_ prefix: P, _ value: V, to out: inout [UInt8])
    where P.Element == UInt8, V.Element == UInt8 {
        let v = Array(value)
        var line = 0
        for b in prefix { put(b, &out, &line) }
        // Whether the current line holds something other than blanks: the
        // prefix counts (a field name is text), a fresh continuation does not.
        var lineHasText = line > 0
        var i = 0
        while i < v.count {
            // One segment: a run of blanks, then a run of non-blanks.
            let start = i
            while i < v.count && ASCII.isSpace(v[i]) { i += 1 }
            while i < v.count && !ASCII.isSpace(v[i]) { i += 1 }
            if ASCII.isSpace(v[start]) && lineHasText && line + (i - start) > preferredLine {
                out.append(ASCII.cr)
                out.append(ASCII.lf)
                line = 0
                lineHasText = false
            }
            for k in start..<i { put(v[k], &out, &line) }
            if !ASCII.isSpace(v[i - 1]) { lineHasText = true }
        }
        out.append(ASCII.cr)
        out.append(ASCII.lf)
    }

    /// Appends one octet, breaking the line with CRLF SP when it is full.
    @inline(__always)
    private static func put(_ b: UInt8, _ out: inout [UInt8], _ line: inout Int) {
        if line >= maxLine {
            out.append(ASCII.cr)
            out.append(ASCII.lf)
            out.append(ASCII.space)
            line = 1
        }
        out.append(b)
        line += 1
    }

    /// A value fit for `append`: control octets (CR, LF, NUL, …; HT is a
    /// blank and stays) become spaces, runs of blanks longer than
    /// `maxBlankRun` are shortened, and leading and trailing blanks are
    /// removed. Octets of 128 and above are kept (RFC 6532 §3.2).
    /// `keepingControls` leaves control octets as they are, for a value known
    /// to hold no CR or LF (`RecipientRewriter.foldable`).
    static func sanitized<V: Collection>(_ value: V, keepingControls: Bool = false) -> [UInt8]
    where V.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(value.count)
        var run = 0
        for raw in value {
            let b = !keepingControls && raw < 32 && raw != ASCII.tab ? ASCII.space : raw
            if ASCII.isSpace(b) {
                if out.isEmpty || run >= maxBlankRun { continue }
                run += 1
            } else {
                run = 0
            }
            out.append(b)
        }
        while let last = out.last, ASCII.isSpace(last) { out.removeLast() }
        return out
    }
}

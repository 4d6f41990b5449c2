@testable import PosternCore

// The spool record decoder (SpoolCodec) over arbitrary bytes: segment headers,
// records with their CRC, and every payload parser, plus segment file names.
// The first byte chooses; with bit 0 set the target rewrites the record's CRC
// (and kind and padding) so the payload parsers see what a valid record carries.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    var input = FuzzInput(data)
    let mode = input.byte()
    var bytes = Array(input.rest())
    if mode & 1 != 0 { sealRecord(&bytes, kind: mode >> 1) }

    bytes.withUnsafeBytes { b in
        if let seq = SpoolCodec.parseSegmentHeader(b) {
            require(b.count >= SpoolCodec.segmentHeaderLength, "a header from too few bytes")
            // Magic and sequence come back, and a version this reader reads (the
            // current one or an older, see SpoolCodec's "Versions"); the
            // header-length field (bytes 6–7) is not checked by the parser
            // (reported, not a trap).
            let version = UInt16(b[4]) | UInt16(b[5]) << 8
            require(version >= SpoolCodec.oldestReadableVersion && version <= SpoolCodec.version, "version \(version) read")
            var expected = SpoolCodec.segmentHeader(sequence: seq)
            expected[4] = b[4]
            expected[5] = b[5]
            expected[6] = b[6]
            expected[7] = b[7]
            require(expected == Array(b[0..<SpoolCodec.segmentHeaderLength]), "header round trip")
        }
        switch SpoolCodec.parseRecord(b) {
        case .record(let frame):
            require(frame.length <= b.count, "a record longer than its bytes")
            require(frame.payloadOffset + frame.payloadLength + 4 == frame.length, "frame arithmetic")
            checkPayload(frame.kind, UnsafeRawBufferPointer(rebasing: b[frame.payloadOffset..<(frame.payloadOffset + frame.payloadLength)]))
        case .needMore(let total):
            require(total > b.count, "needMore with the bytes already there")
        case .corrupt:
            break
        }
        // Every payload parser meets every input, not only well-framed ones.
        checkPayload(.envelope, b)
        checkPayload(.commit, b)
        checkPayload(.recipient, b)
    }
    let name = String(decoding: bytes.prefix(24), as: UTF8.self)
    if let seq = SpoolCodec.segmentSequence(fileName: name) {
        require(SpoolCodec.segmentName(seq) == name, "a segment name that does not round-trip")
    }
}

func checkPayload(_ kind: SpoolCodec.Kind, _ p: UnsafeRawBufferPointer) {
    switch kind {
    case .envelope:
        guard let e = SpoolCodec.parseEnvelope(p) else { return }
        // Flag bits 5–7 are refused and bit 4's parameters section is read
        // whole, so what parses is written back byte for byte (version 2).
        require(SpoolCodec.canEncode(e), "a parsed envelope that cannot be written")
        require(SpoolCodec.envelopePayload(e) == Array(p), "envelope round trip")
        if let envid = e.envelopeID { require(DSNParameters.envelopeID(envid) == envid, "ENVID read not valid") }
        require(e.recipientParameters.isEmpty || e.recipientParameters.count == e.recipients.count, "parameters count")
        for r in e.recipientParameters {
            if let n = r.notify { require(n.isValid, "NOTIFY read not valid") }
            if let o = r.orcpt { require(DSNParameters.originalRecipient(o, utf8: e.smtputf8) == o, "ORCPT read not valid") }
        }
    case .commit:
        guard let size = SpoolCodec.parseCommit(p) else { return }
        require(size >= 0, "a negative commit size")
        require(SpoolCodec.commitPayload(size: size) == Array(p), "commit round trip")
    case .recipient:
        guard let r = SpoolCodec.parseRecipient(p) else { return }
        require(SpoolCodec.recipientPayload(index: r.index, outcome: r.outcome) == Array(p), "recipient round trip")
    case .text, .abort:
        break
    }
}

/// Makes the front of `bytes` a record that passes the checks before the CRC: a
/// payload length that fits, a known kind, zero padding, and the right CRC-32C.
func sealRecord(_ bytes: inout [UInt8], kind: UInt8) {
    guard bytes.count >= SpoolCodec.recordOverhead else { return }
    let n = bytes.count - SpoolCodec.recordOverhead
    let header = SpoolCodec.recordHeader(kind: SpoolCodec.Kind(rawValue: bytes[4]) ?? SpoolCodec.Kind(rawValue: kind % 5 + 1) ?? .text,
                                         id: bytes.withUnsafeBytes { SpoolCodec.getLE($0, 8, 8) } ?? 0, payloadLength: n)
    bytes.replaceSubrange(0..<SpoolCodec.recordHeaderLength, with: header)
    let body = Array(bytes[0..<(SpoolCodec.recordHeaderLength + n)])
    let crc = CRC32C.checksum(body)
    for i in 0..<4 { bytes[SpoolCodec.recordHeaderLength + n + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
}

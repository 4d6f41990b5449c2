@testable import PosternCore

// Base64 (RFC 4648 §4) as the sender meets it: the upstream's 334 challenges
// (an XOAUTH2 error is base64 JSON) are decoded from whatever it sends. Any
// input decodes to nil or to bytes that encode back to the same data, and
// whatever is encoded decodes back to itself.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    let bytes = Array(data)
    if let decoded = Base64.decode(bytes) {
        require(decoded.count <= bytes.count, "decoding grew the data")
        let again = Base64.encode(decoded)
        require(Base64.decode(again) == decoded, "re-encoding changed the bytes")
    }
    let encoded = Base64.encode(bytes)
    require(encoded.count == (bytes.count + 2) / 3 * 4, "encoded length")
    require(Base64.decode(encoded) == bytes, "decode(encode(x)) != x")
    // SASL's first-line rule on the same bytes: no CR or LF, no trailing blank.
    let line = SASL.firstLine(bytes)
    require(!line.contains(ASCII.cr) && !line.contains(ASCII.lf), "a line break in a secret")
    require(line.last.map { !ASCII.isSpace($0) } ?? true, "a trailing blank in a secret")
}

@testable import PosternCore

// CommandLineWords.split over arbitrary bytes: it never traps; a failure points
// at the byte it names; a success has no NUL in any word, agrees with a plain
// split on spaces and tabs when there is nothing to unquote, and `quoted` gives
// a line that splits back to the same words.

func fuzzOne(_ data: UnsafeRawBufferPointer) {
    let line = Array(data)
    switch CommandLineWords.split(bytes: line) {
    case .success(let words):
        for w in words { require(!w.utf8.contains(0), "a NUL byte in a word") }
        let special = line.contains { $0 == 34 || $0 == 39 || $0 == 92 }
        if !special {
            let plain = line.split(whereSeparator: { ASCII.isSpace($0) }).map { String(decoding: $0, as: UTF8.self) }
            require(words == plain, "a line without quotes or backslashes split differently from a plain split")
        }
        let again = CommandLineWords.quoted(words)
        guard case .success(let back) = CommandLineWords.split(again) else {
            require(false, "the quoted words do not split")
            return
        }
        require(back == words, "the quoted words split into other words")
    case .failure(let failure):
        require(!failure.description.isEmpty, "an empty description")
        switch failure {
        case .unterminatedQuote(let quote, let column):
            require(quote == 34 || quote == 39, "an unterminated quote that is no quote")
            require(column >= 1 && column <= line.count && line[column - 1] == quote, "the column is not the quote")
        case .trailingBackslash(let column):
            require(column == line.count && line.last == 92, "a trailing backslash not at the end")
        case .nulByte(let column):
            require(column >= 1 && column <= line.count && line[column - 1] == 0, "the column is not the NUL")
        }
    }
}

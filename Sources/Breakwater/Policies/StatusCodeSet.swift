/// A set of HTTP status codes, asked on every response: whether the app's answer is a breaker
/// failure, whether it is retried.
///
/// A bitmap over 0...999 (llhttp reads three digits), so membership is a shift and a mask.
/// A `Set<Int>` hashes the code on every lookup, which cost more than the rest of a response's
/// breaker and retry bookkeeping together.
struct StatusCodeSet: Sendable {
    private var words = [UInt64](repeating: 0, count: 16)

    init(_ codes: some Sequence<Int>) {
        for code in codes where (0..<1000).contains(code) {
            self.words[code >> 6] |= 1 << UInt64(code & 63)
        }
    }

    func contains(_ code: Int) -> Bool {
        guard (0..<1000).contains(code) else { return false }
        return self.words[code >> 6] & (1 << UInt64(code & 63)) != 0
    }
}

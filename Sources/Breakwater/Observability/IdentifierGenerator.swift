/// The random numbers behind request ids and trace ids: wyrand, seeded once from the system.
///
/// `SystemRandomNumberGenerator` costs a `getrandom` system call per 64 bits — five per request
/// for a request id, a trace id and a span id, more than the request's own reads and writes.
/// Ids must not collide and must not be guessable from outside at a glance; they are not
/// secrets (they travel in headers and logs). One generator per event loop, in
/// `EventLoopContext`, so no lock and no shared state.
struct IdentifierGenerator: RandomNumberGenerator {
    private var state: UInt64

    init() {
        var system = SystemRandomNumberGenerator()
        self.state = system.next()
    }

    /// For tests: a fixed sequence.
    init(seed: UInt64) {
        self.state = seed
    }

    mutating func next() -> UInt64 {
        self.state &+= 0xa076_1d64_78bd_642f
        let product = self.state.multipliedFullWidth(by: self.state ^ 0xe703_7ed1_a0b4_28db)
        return product.high ^ product.low
    }
}

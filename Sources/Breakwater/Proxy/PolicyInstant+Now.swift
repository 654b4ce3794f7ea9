import NIOCore

extension PolicyInstant {
    /// The event loops' clock, `NIODeadline`'s, which the data path and the admin listener
    /// give the policies as `now`: policies never read a clock themselves.
    static var now: Self {
        Self(NIODeadline.now())
    }

    init(_ deadline: NIODeadline) {
        self.init(nanoseconds: deadline.uptimeNanoseconds)
    }
}

import NIOCore

extension PolicyInstant {
    /// The event loops' clock, `NIODeadline`'s, which the data path and the admin listener
    /// give the policies as `now`: policies never read a clock themselves.
    static var now: Self {
        Self(nanoseconds: NIODeadline.now().uptimeNanoseconds)
    }
}

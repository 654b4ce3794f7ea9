import Atomics
import NIOCore

/// A cap on a listener's open connections (`server.max_connections` for the proxy, a fixed one
/// for the admin listener): connections beyond it are closed as soon as accepted, so the
/// connections already open keep their file descriptors and their service.
final class ConnectionLimit: Sendable {
    private let maximum: Int
    private let open = ManagedAtomic(0)

    init(maximum: Int) {
        self.maximum = maximum
    }

    /// Connections admitted and not yet closed.
    var count: Int { self.open.load(ordering: .relaxed) }

    func admit(_ channel: any Channel) -> Bool {
        if self.open.wrappingIncrementThenLoad(ordering: .relaxed) > self.maximum {
            self.open.wrappingDecrement(ordering: .relaxed)
            return false
        }
        channel.closeFuture.whenComplete { _ in
            self.open.wrappingDecrement(ordering: .relaxed)
        }
        return true
    }
}

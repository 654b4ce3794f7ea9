#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// A listener that did not open: which key, which address, and why, in the words a user acts on
/// (`cannot listen on 0.0.0.0:8080 (listen): Address already in use`), where NIO's own error
/// names only the system call.
struct ListenError: Error, CustomStringConvertible {
    /// The configuration key that names the address: `listen` or `admin.listen`.
    var key: String
    var address: HostPort
    var reason: any Error

    var description: String {
        let why = (self.reason as? IOError).map { String(cString: strerror($0.errnoCode)) } ?? "\(self.reason)"
        return "cannot listen on \(self.address) (\(self.key)): \(why)"
    }

    /// Runs `bind`, naming the key and the address in its error.
    static func naming<Bound>(_ key: String, _ address: HostPort, _ bind: () async throws -> Bound) async throws -> Bound {
        do {
            return try await bind()
        } catch {
            throw ListenError(key: key, address: address, reason: error)
        }
    }
}

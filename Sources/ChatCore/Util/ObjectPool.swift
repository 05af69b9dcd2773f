import Foundation

/// A small pool of reusable objects (connections) for code that runs on a shared thread
/// pool rather than on threads of its own. Each borrowed object is used by one thread at a time.
public final class ObjectPool<T: AnyObject>: @unchecked Sendable {
    private let lock = NSLock()
    private var idle: [T] = []
    private let make: () -> T

    public init(make: @escaping @Sendable () -> T) { self.make = make }

    public func with<R>(_ body: (T) throws -> R) rethrows -> R {
        lock.lock()
        let item = idle.popLast() ?? make()
        lock.unlock()
        defer {
            lock.lock()
            idle.append(item)
            lock.unlock()
        }
        return try body(item)
    }
}

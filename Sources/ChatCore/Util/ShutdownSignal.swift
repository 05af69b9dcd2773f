import Foundation

/// Graceful shutdown on SIGTERM/SIGINT for all three processes. `block()` must run first
/// thing in main, before any thread exists, so every thread inherits the blocked mask and
/// the signals wait for `wait()` (sigwait) instead of killing the process mid-request.
/// (A Dispatch signal source is not enough on Linux: with the signal ignored, the kernel
/// discards it before libdispatch sees it.)
public enum ShutdownSignal {
    private static func set() -> sigset_t {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        return signals
    }

    public static func block() {
        var signals = set()
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        signal(SIGPIPE, SIG_IGN)
    }

    /// Blocks the calling thread until SIGTERM or SIGINT; returns the signal.
    @discardableResult
    public static func wait() -> Int32 {
        var signals = set()
        var received: Int32 = 0
        sigwait(&signals, &received)
        return received
    }

    /// Runs `handler` on a thread of its own once a shutdown signal arrives.
    public static func onSignal(_ handler: @escaping @Sendable (Int32) -> Void) {
        let thread = Thread { handler(wait()) }
        thread.name = "signals"
        thread.start()
    }
}

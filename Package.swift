// swift-tools-version:6.0
// swiftchat: a self-hosted realtime messenger. nginx in front; three Swift processes
// behind it (FCGIApp, WSRelay, Worker); each C client wrapped once in ChatCore.
import PackageDescription

let package = Package(
    name: "swiftchat",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "FCGIApp", targets: ["FCGIApp"]),
        .executable(name: "WSRelay", targets: ["WSRelay"]),
        .executable(name: "Worker", targets: ["Worker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // One system-library target per C client. Each has a module map and a shim
        // header for what Swift cannot import directly (variadic functions, macros).
        .systemLibrary(name: "CFCGI", path: "Sources/CFCGI", providers: [.apt(["libfcgi-dev"])]),
        .systemLibrary(name: "CPostgres", path: "Sources/CPostgres", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CMongoc", path: "Sources/CMongoc", pkgConfig: "libmongoc-1.0", providers: [.apt(["libmongoc-dev"])]),
        // hiredis' .pc passes -D_FILE_OFFSET_BITS=64, which SwiftPM refuses: no pkgConfig.
        .systemLibrary(name: "CHiredis", path: "Sources/CHiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CRabbitMQ", path: "Sources/CRabbitMQ", pkgConfig: "librabbitmq", providers: [.apt(["librabbitmq-dev"])]),
        .systemLibrary(name: "CCurl", path: "Sources/CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CArgon2", path: "Sources/CArgon2", pkgConfig: "libargon2", providers: [.apt(["libargon2-dev"])]),
        // Not a library: the kernel's epoll and eventfd, with the packed epoll_event kept in C.
        .systemLibrary(name: "CEpoll", path: "Sources/CEpoll"),

        // Shared by all three processes: configuration, logging, errors, models, JSON,
        // JWT, and the thin safe wrappers over the C clients (no C pointer leaves them).
        .target(
            name: "ChatCore",
            dependencies: [
                "CPostgres", "CMongoc", "CHiredis", "CRabbitMQ", "CCurl", "COpenSSL", "CArgon2", "CFCGI", "CEpoll",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The REST API: router, request/response, handlers. A library so tests can drive it in-process.
        .target(name: "ChatAPI", dependencies: ["ChatCore"]),
        .executableTarget(name: "FCGIApp", dependencies: ["ChatAPI", "ChatCore"]),
        .executableTarget(
            name: "WSRelay",
            dependencies: [
                "ChatCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ]
        ),
        .executableTarget(name: "Worker", dependencies: ["ChatCore"]),
        // Micro-benchmarks of our own code paths (bench/ runs it), e.g. argon2id hashes/s.
        .executableTarget(name: "Bench", dependencies: ["ChatCore", "CEpoll"]),
        .testTarget(name: "ChatCoreTests", dependencies: ["ChatCore", "ChatAPI"]),
    ],
    swiftLanguageModes: [.v6]
)

import Foundation
import ChatCore

/// Who may call a route. Declared where the route is registered.
public enum AuthRequirement: Sendable {
    case none
    case user
}

/// The identity a valid token and a live session establish.
public struct Identity: Sendable, Equatable {
    public let userID: String
    public let sessionID: String
}

/// What a handler gets: the request, its path parameters, the caller (for `.user`
/// routes) and the thread's own connections.
public struct RequestContext {
    public let request: HTTPRequest
    public let params: [String: String]
    public let identity: Identity?
    public let services: ThreadServices

    /// The caller of a `.user` route (the router guarantees it is set there).
    public var user: Identity {
        get throws(APIError) {
            guard let identity else { throw APIError.unauthorized }
            return identity
        }
    }

    public func decode<T: Decodable>(_ type: T.Type) throws(APIError) -> T {
        try JSON.decodeBody(type, from: request.body)
    }

    public func param(_ name: String) -> String { params[name] ?? "" }
}

public typealias Handler = @Sendable (RequestContext) throws -> HTTPReply

public struct Route: Sendable {
    public let method: String
    public let pattern: String
    public let auth: AuthRequirement
    public let handler: Handler
}

/// Path routing with `{name}` parameters. For a path, the most specific pattern wins
/// (literal segments beat parameters, left to right), so `/api/auth/login` is matched
/// before `/api/auth/{provider}`; a known path with another method is 405 with `Allow`.
public struct Router: Sendable {
    enum Segment: Equatable, Sendable {
        case literal(String)
        case param(String)
    }

    struct PatternRoutes: Sendable {
        let pattern: String
        let segments: [Segment]
        var routes: [String: Route]
    }

    private var patterns: [PatternRoutes] = []
    /// Patterns without parameters by their text: a path equal to one of them needs no
    /// segment matching (an all-literal pattern is the most specific match there is).
    private var literal: [String: Int] = [:]

    public init() {}

    public mutating func add(_ method: String, _ pattern: String, auth: AuthRequirement, _ handler: @escaping Handler) {
        let route = Route(method: method, pattern: pattern, auth: auth, handler: handler)
        if let i = patterns.firstIndex(where: { $0.pattern == pattern }) {
            precondition(patterns[i].routes[method] == nil, "duplicate route \(method) \(pattern)")
            patterns[i].routes[method] = route
        } else {
            let segments = Router.parse(pattern)
            if !segments.contains(where: { if case .param = $0 { return true } else { return false } }) {
                literal[pattern] = patterns.count
            }
            patterns.append(PatternRoutes(pattern: pattern, segments: segments, routes: [method: route]))
        }
    }

    static func parse(_ pattern: String) -> [Segment] {
        pattern.split(separator: "/").map { s in
            s.hasPrefix("{") && s.hasSuffix("}") ? .param(String(s.dropFirst().dropLast())) : .literal(String(s))
        }
    }

    public enum Resolution {
        case matched(Route, [String: String])
        case notFound
        case methodNotAllowed([String])
    }

    public func resolve(method: String, path: String) -> Resolution {
        if let i = literal[path] { return Router.pick(patterns[i], method: method, params: [:]) }
        let raw = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        // A trailing slash or an empty segment is a different (unknown) path.
        guard !raw.contains(where: { $0.isEmpty }) else { return .notFound }
        var segments = [String]()
        segments.reserveCapacity(raw.count)
        for s in raw {
            guard s.utf8.contains(UInt8(ascii: "%")) else { segments.append(String(s)); continue }
            guard let decoded = s.removingPercentEncoding, !decoded.contains("/") else { return .notFound }
            segments.append(decoded)
        }
        var best: (PatternRoutes, [String: String], [Bool])? = nil
        for p in patterns where p.segments.count == segments.count {
            var params: [String: String] = [:]
            var literalMask = [Bool]()
            var ok = true
            for (seg, value) in zip(p.segments, segments) {
                switch seg {
                case .literal(let l):
                    if l != value { ok = false }
                    literalMask.append(true)
                case .param(let name):
                    params[name] = value
                    literalMask.append(false)
                }
                if !ok { break }
            }
            guard ok else { continue }
            if let current = best {
                // Lexicographic: the first position where one has a literal and the other a parameter decides.
                if let i = literalMask.indices.first(where: { literalMask[$0] != current.2[$0] }), literalMask[i] {
                    best = (p, params, literalMask)
                }
            } else {
                best = (p, params, literalMask)
            }
        }
        guard let (p, params, _) = best else { return .notFound }
        return Router.pick(p, method: method, params: params)
    }

    private static func pick(_ p: PatternRoutes, method: String, params: [String: String]) -> Resolution {
        if let route = p.routes[method] { return .matched(route, params) }
        if method == "HEAD", let route = p.routes["GET"] { return .matched(route, params) }
        return .methodNotAllowed(p.routes.keys.sorted())
    }
}

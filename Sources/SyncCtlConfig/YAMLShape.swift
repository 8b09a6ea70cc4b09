internal import CYaml  // libyaml, which Yams is built on (a module of the Yams package)

/// Bounds on the shape of a config file's YAML, checked on libyaml's event stream (a loop, no
/// recursion, nothing built) before Yams builds values from the text.
///
/// Why: Yams turns YAML into values recursively and trusts the shape it is given. Found by
/// fuzzing (Fuzz/, target `config`): a mapping key that is a list or a mapping (`[a]: b`,
/// `{[a]: b}`) makes `Yams.load` trap on a force unwrap; a deeply nested text (`[[[[...`, or
/// indentation) overflows the stack; and a few lines of aliases that refer to aliases ("billion
/// laughs") expand to billions of values and hang. A syncctl config is a flat mapping of flags,
/// so refusing all three changes nothing for a real file.
enum YAMLShape {
    /// Deepest nesting of lists and mappings, aliases expanded (a real config has 2).
    static let maximumDepth = 64
    /// Most values, aliases expanded (a real config has a few dozen).
    static let maximumValues = 100_000

    /// Why the first document of `text` is out of bounds, or nil when it is within them (text
    /// that is not YAML at all is also nil here: Yams then reports the syntax error).
    static func problem(in text: String) -> String? {
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else { return nil }
        defer { yaml_parser_delete(&parser) }
        yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBufferPointer { buffer -> String? in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            var shape = Walk()
            while true {
                var event = yaml_event_t()
                guard yaml_parser_parse(&parser, &event) == 1 else { return nil }
                defer { yaml_event_delete(&event) }
                switch event.type {
                case YAML_SCALAR_EVENT:
                    if let problem = shape.value(height: 0, count: 1, isCollection: false) { return problem }
                    if let anchor = name(event.data.scalar.anchor) { shape.anchors[anchor] = (1, 0, false) }
                case YAML_ALIAS_EVENT:
                    // An undefined alias is Yams' error to report.
                    guard let anchor = name(event.data.alias.anchor), let target = shape.anchors[anchor] else { return nil }
                    if let problem = shape.value(height: target.height, count: target.values, isCollection: target.isCollection) { return problem }
                case YAML_SEQUENCE_START_EVENT, YAML_MAPPING_START_EVENT:
                    let isMapping = event.type == YAML_MAPPING_START_EVENT
                    let anchor = name(isMapping ? event.data.mapping_start.anchor : event.data.sequence_start.anchor)
                    if let problem = shape.open(isMapping: isMapping, anchor: anchor) { return problem }
                case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                    shape.close()
                case YAML_DOCUMENT_END_EVENT, YAML_STREAM_END_EVENT:
                    // Yams reads one document only (a second one is its error to report).
                    return nil
                default:
                    break
                }
            }
        }
    }

    /// The state of the walk over the events.
    struct Walk {
        /// An open list or mapping.
        struct Frame {
            var isMapping: Bool
            /// In a mapping: whether the next value is a key.
            var expectsKey = true
            var anchor: String?
            /// Its nesting level (1 at the top) and the deepest level reached inside it.
            var level: Int
            var deepest: Int
            /// `values` when it opened.
            var valuesBefore: Int
        }
        var stack: [Frame] = []
        var values = 0
        /// What each anchor stands for: values, height (0 for a scalar) and kind.
        var anchors: [String: (values: Int, height: Int, isCollection: Bool)] = [:]

        /// A value (a scalar, an alias, or the start of a list or mapping) at the current place.
        mutating func value(height: Int, count: Int, isCollection: Bool) -> String? {
            if let top = stack.indices.last, stack[top].isMapping {
                if stack[top].expectsKey && isCollection { return "has a mapping key that is a list or a mapping; keys must be plain values" }
                stack[top].expectsKey.toggle()
            }
            values += count
            if values > YAMLShape.maximumValues { return "has more than \(YAMLShape.maximumValues) values (aliases expanded)" }
            let reached = stack.count + height
            if reached > YAMLShape.maximumDepth { return "is nested more than \(YAMLShape.maximumDepth) levels deep" }
            if let top = stack.indices.last { stack[top].deepest = max(stack[top].deepest, reached) }
            return nil
        }

        mutating func open(isMapping: Bool, anchor: String?) -> String? {
            if let problem = value(height: 1, count: 1, isCollection: true) { return problem }
            stack.append(Frame(isMapping: isMapping, anchor: anchor, level: stack.count + 1, deepest: stack.count + 1, valuesBefore: values - 1))
            return nil
        }

        mutating func close() {
            guard let frame = stack.popLast() else { return }
            if let anchor = frame.anchor {
                anchors[anchor] = (values - frame.valuesBefore, frame.deepest - frame.level + 1, true)
            }
            if let top = stack.indices.last { stack[top].deepest = max(stack[top].deepest, frame.deepest) }
        }
    }

    /// An anchor's name from libyaml (nil when the value has none).
    private static func name(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
        pointer.map { String(cString: $0) }
    }
}

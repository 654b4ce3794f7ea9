import NIOHTTP1

/// A message's header fields as they came off the wire, in one buffer, read in place.
///
/// The proxy looks at a field's name to decide what the field is to it, and then copies the
/// field on or leaves it out: it never needs the field as a `String`. NIO's `HTTPHeaders`
/// makes two strings of every field (each checked to be UTF-8, the longer ones allocated),
/// an array to hold them, and reference counts each string every time a loop visits it; on a
/// small proxied request that came to about a tenth of the proxy's instructions. Here a head's
/// fields are one allocation, filled as llhttp hands over their pieces (`Builder`), and walked
/// as bytes (`withFields`).
struct HeaderFields: @unchecked Sendable {
    /// Each field as its name's length, its name, its value's length and its value, the
    /// lengths `UInt32` in the machine's byte order; nil when there are none. Written once, as
    /// it is made, and only read after: copies of a head share it, on any thread (which is why
    /// the fields are `Sendable`, as heads are, though `ManagedBuffer` is not).
    private let storage: Storage?
    private(set) var count: Int

    /// The bytes behind a header and the count of them, in one allocation of their exact
    /// size. Not an array: making one of a given size looks its storage class up at run time,
    /// which costs more than the copy into it.
    private final class Storage: ManagedBuffer<Int, UInt8> {
        static func make(size: Int, _ write: (UnsafeMutableRawPointer) -> Void) -> Storage {
            let storage = unsafeDowncast(Storage.create(minimumCapacity: size) { _ in size }, to: Storage.self)
            storage.withUnsafeMutablePointerToElements { write(UnsafeMutableRawPointer($0)) }
            return storage
        }
    }

    private init(_ bytes: [UInt8], count: Int) {
        self.storage = bytes.isEmpty ? nil : bytes.withUnsafeBytes { bytes in
            Storage.make(size: bytes.count) { $0.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        }
        self.count = count
    }

    private init(storage: Storage?, count: Int) {
        self.storage = storage
        self.count = count
    }

    /// Fields made from strings: for tests, and for heads that did not come off the wire.
    init(_ fields: some Sequence<(name: String, value: String)>) {
        var storage: [UInt8] = []
        var count = 0
        for (name, value) in fields {
            for piece in [name, value] {
                withUnsafeBytes(of: UInt32(piece.utf8.count)) { storage += $0 }
                storage += piece.utf8
            }
            count += 1
        }
        self.init(storage, count: count)
    }

    /// Runs `body` with the fields in place. What `body` gets is valid only inside it.
    func withFields<Result>(_ body: (View) throws -> Result) rethrows -> Result {
        guard let storage = self.storage else {
            return try body(View(bytes: UnsafeRawBufferPointer(start: nil, count: 0)))
        }
        return try storage.withUnsafeMutablePointers { size, bytes in
            try body(View(bytes: UnsafeRawBufferPointer(start: bytes, count: size.pointee)))
        }
    }

    /// The fields as NIO's type, for what still speaks it (tests, trailers).
    var httpHeaders: HTTPHeaders {
        self.withFields { fields in HTTPHeaders(fields.map { ($0.name.string, $0.value.string) }) }
    }

    /// The fields in order, in place.
    struct View: Sequence {
        fileprivate let bytes: UnsafeRawBufferPointer

        func makeIterator() -> Iterator {
            Iterator(bytes: self.bytes)
        }

        struct Iterator: IteratorProtocol {
            fileprivate let bytes: UnsafeRawBufferPointer
            private var offset = 0

            fileprivate init(bytes: UnsafeRawBufferPointer) {
                self.bytes = bytes
            }

            mutating func next() -> (name: FieldBytes, value: FieldBytes)? {
                guard self.offset < self.bytes.count else { return nil }
                let name = self.nextPiece()
                return (name, self.nextPiece())
            }

            private mutating func nextPiece() -> FieldBytes {
                let length = Int(self.bytes.loadUnaligned(fromByteOffset: self.offset, as: UInt32.self))
                let start = self.offset + MemoryLayout<UInt32>.size
                self.offset = start + length
                return FieldBytes(UnsafeRawBufferPointer(rebasing: self.bytes[start..<self.offset]))
            }
        }
    }

    /// Fields gathered as llhttp hands over their names and values, which come in as many
    /// pieces as the reads that carried them.
    ///
    /// Nearly every head arrives in one read. While it does, the builder only notes where each
    /// name and value lies in the bytes being parsed, and copies them all out at once, into
    /// storage of their exact size, when the head ends. Copied a piece at a time instead, into
    /// an array or a `ByteBuffer`, each copy cost more than the strings this type replaces
    /// (a generic append; a run-time exclusivity check and capacity arithmetic). A head that
    /// runs on into another read is copied out as the read ends (`keepPieces`) and written on
    /// piece by piece.
    struct Builder {
        /// Where each name and value so far lies, in the bytes being parsed. Kept, with its
        /// capacity, from head to head.
        private var spans: [UnsafeRawBufferPointer] = []
        /// The head so far, copied out, once it runs on beyond the bytes it started in.
        private var kept: [UInt8]?
        /// A name or value has begun and not ended.
        private var isInPiece = false
        /// In `kept`, where the length of the name or value being written goes.
        private var lengthAt = 0
        private var count = 0

        /// - Parameter piece: bytes that stay where they are until `keepPieces` or `build`.
        mutating func append(_ piece: UnsafeRawBufferPointer) {
            if self.kept != nil {
                self.write(piece)
            } else if !self.isInPiece {
                self.spans.append(piece)
            } else if let last = self.spans.last, let start = last.baseAddress, start + last.count == piece.baseAddress {
                // More of the same piece in the same bytes (llhttp does not, today, split one).
                self.spans[self.spans.count - 1] = UnsafeRawBufferPointer(start: last.baseAddress, count: last.count + piece.count)
            } else {
                self.keepPieces()
                self.write(piece)
            }
            self.isInPiece = true
        }

        /// Ends a name. Returns its length: llhttp takes an empty name, the proxy does not.
        mutating func endName() -> Int {
            self.endPiece()
        }

        mutating func endValue() {
            self.endPiece()
            self.count += 1
        }

        @discardableResult
        private mutating func endPiece() -> Int {
            defer { self.isInPiece = false }
            guard self.kept != nil else {
                // A name or value with no bytes (an empty value) has no piece to end.
                if !self.isInPiece { self.spans.append(UnsafeRawBufferPointer(start: nil, count: 0)) }
                return self.spans[self.spans.count - 1].count
            }
            if !self.isInPiece { self.write(UnsafeRawBufferPointer(start: nil, count: 0)) }
            let length = self.kept!.count - self.lengthAt - MemoryLayout<UInt32>.size
            self.kept!.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(length), toByteOffset: self.lengthAt, as: UInt32.self) }
            return length
        }

        /// Copies what the spans point at out of the bytes being parsed, before those go.
        mutating func keepPieces() {
            guard self.kept == nil, !self.spans.isEmpty else { return }
            var kept: [UInt8] = []
            for span in self.spans {
                // The last one may go on in the next read: its length is written again as it ends.
                self.lengthAt = kept.count
                withUnsafeBytes(of: UInt32(span.count)) { kept += $0 }
                kept += span
            }
            self.kept = kept
            self.spans.removeAll(keepingCapacity: true)
        }

        /// Writes into `kept`, opening a name or value when none is.
        private mutating func write(_ piece: UnsafeRawBufferPointer) {
            if !self.isInPiece {
                self.lengthAt = self.kept!.count
                withUnsafeBytes(of: UInt32(0)) { self.kept! += $0 }
            }
            self.kept! += piece
        }

        /// The fields gathered so far; the builder starts over.
        mutating func build() -> HeaderFields {
            defer {
                self.spans.removeAll(keepingCapacity: true)
                (self.kept, self.isInPiece, self.count) = (nil, false, 0)
            }
            if let kept = self.kept {
                return HeaderFields(kept, count: self.count)
            }
            guard !self.spans.isEmpty else { return HeaderFields(storage: nil, count: 0) }
            let size = self.spans.reduce(0) { $0 + MemoryLayout<UInt32>.size + $1.count }
            let storage = Storage.make(size: size) { start in
                var at = start
                for span in self.spans {
                    at.storeBytes(of: UInt32(span.count), as: UInt32.self)
                    at += MemoryLayout<UInt32>.size
                    if let start = span.baseAddress {
                        at.copyMemory(from: start, byteCount: span.count)
                    }
                    at += span.count
                }
            }
            return HeaderFields(storage: storage, count: self.count)
        }
    }
}

extension HeaderFields: ExpressibleByDictionaryLiteral {
    init(dictionaryLiteral elements: (String, String)...) {
        self.init(elements.lazy.map { (name: $0.0, value: $0.1) })
    }
}

extension HeaderFields: Equatable {
    static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.count == rhs.count && lhs.withFields { mine in rhs.withFields { theirs in mine.bytes.elementsEqual(theirs.bytes) } }
    }
}

/// A field's name or value, in place: valid only inside the `HeaderFields.withFields` that
/// gave it.
struct FieldBytes {
    let bytes: UnsafeRawBufferPointer

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    var count: Int { self.bytes.count }

    var string: String { String(decoding: self.bytes, as: UTF8.self) }

    /// ASCII-only case-insensitive comparison, in place: the one loop behind
    /// `StringProtocol.equalsASCIICaseInsensitive` too.
    func equalsASCIICaseInsensitive(_ other: some StringProtocol) -> Bool {
        guard self.bytes.count == other.utf8.count else { return false }
        return other.withHeadBytes { theirs in
            for index in theirs.indices where self.bytes[index] != theirs[index] {
                if self.bytes[index].lowercasedASCII != theirs[index].lowercasedASCII { return false }
            }
            return true
        }
    }

    /// The value without the blanks around it (RFC 9110 §5.5's optional whitespace); empty
    /// when it is all blanks.
    var trimmed: FieldBytes {
        let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard let first = self.bytes.firstIndex(where: { !isBlank($0) }), let last = self.bytes.lastIndex(where: { !isBlank($0) })
        else {
            return FieldBytes(UnsafeRawBufferPointer(rebasing: self.bytes[0..<0]))
        }
        return FieldBytes(UnsafeRawBufferPointer(rebasing: self.bytes[first...last]))
    }

    /// The decimal number the bytes are, nil if they are anything else or past `Int.max`.
    var decimal: Int? {
        guard !self.bytes.isEmpty else { return nil }
        var value = 0
        for byte in self.bytes {
            let digit = byte &- UInt8(ascii: "0")
            guard digit < 10 else { return nil }
            let (times10, overflowed) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflowedAgain) = times10.addingReportingOverflow(Int(digit))
            guard !overflowed, !overflowedAgain else { return nil }
            value = sum
        }
        return value
    }
}

extension UInt8 {
    var lowercasedASCII: UInt8 { self &- UInt8(ascii: "A") < 26 ? self | 0x20 : self }
}

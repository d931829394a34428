//! A small Python pickle reader and writer: just enough of the format for the neuron-set files
//! the official codes write with `torch.save` and `pickle.dump`.
//!
//! Why our own: burn-store 0.21's pickle reader stops at opcodes these files use (`FRAME`,
//! `STACK_GLOBAL`, `SHORT_BINUNICODE`, `BINBYTES`, which `pickle.dump` at protocol 4 and the
//! legacy storage blobs inside it need) and returns tensors only, while these files are lists
//! and dicts of tensors; serde-pickle reads the containers but cannot rebuild a torch tensor
//! from its persistent id. The reader here builds a plain [`Value`] tree of what the stream
//! says (globals and calls stay symbolic), and the format modules interpret the tree.
//!
//! The reader copies values out of the memo instead of sharing them, so an object pickled
//! twice by reference reads as two equal copies; a list appended to after it was memoized reads
//! from the memo as it was when memoized. Neither happens in the files read here (their shared
//! objects are globals and tuples).

use std::collections::HashMap;

/// One value of a pickle stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// A `str`.
    Str(String),
    /// A `bytes` / `bytearray`.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A dict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A set or frozenset.
    Set(Vec<Value>),
    /// A global: `module.name`.
    Global(String, String),
    /// `callable(*args)` (`REDUCE`, `NEWOBJ`), not evaluated.
    Call(Box<Value>, Vec<Value>),
    /// `obj.__setstate__(state)` (`BUILD`), not evaluated.
    Build(Box<Value>, Box<Value>),
    /// A persistent id (`BINPERSID`), for the loader to resolve.
    Persistent(Box<Value>),
}

impl Value {
    /// The global's `(module, name)` if this is one.
    pub fn global(&self) -> Option<(&str, &str)> {
        match self {
            Value::Global(m, n) => Some((m, n)),
            _ => None,
        }
    }

    /// A short description for error messages.
    pub fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::List(v) => format!("list of {}", v.len()),
            Value::Tuple(v) => format!("tuple of {}", v.len()),
            Value::Dict(v) => format!("dict of {}", v.len()),
            Value::Set(v) => format!("set of {}", v.len()),
            Value::Global(m, n) => format!("{m}.{n}"),
            Value::Call(f, _) => format!("call of {}", f.kind()),
            Value::Build(o, _) => format!("object {}", o.kind()),
            Value::Persistent(_) => "persistent id".into(),
        }
    }

    /// The value of a string key of a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Read one pickle from the start of `bytes`; returns the value and the bytes it used.
///
/// # Errors
/// A message naming the byte offset and the opcode when the stream is not a pickle this reader
/// understands (truncated, an unknown or text-protocol opcode, a stack underflow).
pub fn read(bytes: &[u8]) -> Result<(Value, usize), String> {
    let mut r = Reader {
        bytes,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let value = r.run()?;
    Ok((value, r.pos))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "pickle truncated at byte {} (wanted {n} more bytes)",
                self.pos
            ));
        };
        let bytes: &'a [u8] = self.bytes;
        let out = &bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn len(&mut self, n: u64, at: usize) -> Result<usize, String> {
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| format!("pickle length {n} at byte {at} is past the end of the file"))
    }

    fn string(&mut self, n: usize, at: usize) -> Result<String, String> {
        let raw = self.take(n)?.to_vec();
        String::from_utf8(raw).map_err(|_| format!("pickle string at byte {at} is not UTF-8"))
    }

    fn line(&mut self) -> Result<String, String> {
        let at = self.pos;
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("pickle GLOBAL at byte {at} has no newline"))?;
        let s = self.string(n, at)?;
        self.pos += 1;
        Ok(s)
    }

    fn pop(&mut self, at: usize) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| format!("pickle stack empty at byte {at}"))
    }

    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>, String> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| format!("pickle opcode at byte {at} needs a MARK"))?;
        if mark > self.stack.len() {
            return Err(format!("pickle MARK above the stack at byte {at}"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self, at: usize) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| format!("pickle stack empty at byte {at}"))
    }

    fn memo_get(&self, key: u32, at: usize) -> Result<Value, String> {
        self.memo
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("pickle memo {key} read before it was written (byte {at})"))
    }

    fn memo_put(&mut self, key: u32, at: usize) -> Result<(), String> {
        let v = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| format!("pickle stack empty at byte {at}"))?;
        self.memo.insert(key, v);
        Ok(())
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("pickle protocol {proto} (at most 5 is known)"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => return self.pop(at),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let v = self.top(at)?.clone();
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                    self.stack.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
                    self.stack.push(Value::Int(v.into()));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()?.into()
                    } else {
                        self.u32()?
                    };
                    let n = self.len(n.into(), at)?;
                    let raw = self.take(n)?;
                    self.stack.push(long(raw));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                    self.stack.push(Value::Float(v));
                }
                b'X' | 0x8c | 0x8d | b'T' | b'U' => {
                    let n = match op {
                        b'X' | b'T' => u64::from(self.u32()?),
                        0x8c | b'U' => self.u8()?.into(),
                        _ => self.u64()?,
                    };
                    let n = self.len(n, at)?;
                    let s = self.string(n, at)?;
                    self.stack.push(Value::Str(s));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => u64::from(self.u32()?),
                        b'C' => self.u8()?.into(),
                        _ => self.u64()?,
                    };
                    let n = self.len(n, at)?;
                    let raw = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(raw));
                }
                b']' => self.stack.push(Value::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::List(items));
                }
                b'a' | b'e' => {
                    let items = if op == b'a' {
                        vec![self.pop(at)?]
                    } else {
                        self.pop_mark(at)?
                    };
                    match self.top(at)? {
                        Value::List(list) => list.extend(items),
                        other => {
                            return Err(format!(
                                "pickle APPEND at byte {at} onto a {}",
                                other.kind()
                            ));
                        }
                    }
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err(format!("pickle stack underflow at byte {at}"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b'd' | b's' | b'u' => {
                    let items = match op {
                        b's' => {
                            let v = self.pop(at)?;
                            let k = self.pop(at)?;
                            vec![k, v]
                        }
                        _ => self.pop_mark(at)?,
                    };
                    if items.len() % 2 != 0 {
                        return Err(format!("pickle dict items at byte {at} are not pairs"));
                    }
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    if op == b'd' {
                        self.stack.push(Value::Dict(pairs));
                    } else {
                        match self.top(at)? {
                            Value::Dict(d) => d.extend(pairs),
                            other => {
                                return Err(format!(
                                    "pickle SETITEM at byte {at} onto a {}",
                                    other.kind()
                                ));
                            }
                        }
                    }
                }
                0x8f => self.stack.push(Value::Set(Vec::new())),
                0x90 => {
                    let items = self.pop_mark(at)?;
                    match self.top(at)? {
                        Value::Set(s) => s.extend(items),
                        other => {
                            return Err(format!(
                                "pickle ADDITEMS at byte {at} onto a {}",
                                other.kind()
                            ));
                        }
                    }
                }
                0x91 => {
                    let items = self.pop_mark(at)?;
                    self.stack.push(Value::Set(items));
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err(format!("pickle STACK_GLOBAL at byte {at} without names")),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop(at)?;
                    let func = self.pop(at)?;
                    let Value::Tuple(args) = args else {
                        return Err(format!(
                            "pickle call at byte {at} with {} as arguments",
                            args.kind()
                        ));
                    };
                    self.stack.push(Value::Call(Box::new(func), args));
                }
                0x92 => {
                    let kwargs = self.pop(at)?;
                    let args = self.pop(at)?;
                    let cls = self.pop(at)?;
                    let Value::Tuple(mut args) = args else {
                        return Err(format!("pickle NEWOBJ_EX at byte {at} without a tuple"));
                    };
                    args.push(kwargs);
                    self.stack.push(Value::Call(Box::new(cls), args));
                }
                b'b' => {
                    let state = self.pop(at)?;
                    let obj = self.pop(at)?;
                    self.stack
                        .push(Value::Build(Box::new(obj), Box::new(state)));
                }
                b'Q' => {
                    let pid = self.pop(at)?;
                    self.stack.push(Value::Persistent(Box::new(pid)));
                }
                b'q' => {
                    let key = self.u8()?.into();
                    self.memo_put(key, at)?;
                }
                b'r' => {
                    let key = self.u32()?;
                    self.memo_put(key, at)?;
                }
                0x94 => {
                    let key = u32::try_from(self.memo.len()).expect("memo fits u32");
                    self.memo_put(key, at)?;
                }
                b'h' => {
                    let key = self.u8()?.into();
                    let v = self.memo_get(key, at)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let key = self.u32()?;
                    let v = self.memo_get(key, at)?;
                    self.stack.push(v);
                }
                other => {
                    return Err(format!(
                        "pickle opcode 0x{other:02x} at byte {at} is not one this reader knows \
                         (binary protocols 2-5 are read; text protocol 0 is not)"
                    ));
                }
            }
        }
    }
}

/// A little-endian two's-complement integer of `LONG1` / `LONG4`.
fn long(raw: &[u8]) -> Value {
    if raw.is_empty() {
        return Value::Int(0);
    }
    if raw.len() > 8 {
        // Only the torch legacy magic number is this long; keep its bytes.
        return Value::Bytes(raw.to_vec());
    }
    let fill = if raw[raw.len() - 1] & 0x80 != 0 {
        0xff
    } else {
        0
    };
    let mut buf = [fill; 8];
    buf[..raw.len()].copy_from_slice(raw);
    Value::Int(i64::from_le_bytes(buf))
}

/// Writes a pickle with the opcodes `torch.save` and `pickle.dump` emit (protocol 2, plus
/// `BINBYTES` of protocol 3 where bytes are written). Memoization is not used: every object is
/// written where it appears, which every unpickler reads.
#[derive(Debug, Default)]
pub struct Writer {
    /// The stream so far.
    pub out: Vec<u8>,
}

impl Writer {
    /// A stream opening with `PROTO proto`.
    pub fn new(proto: u8) -> Self {
        Self {
            out: vec![0x80, proto],
        }
    }

    /// Write a value.
    pub fn value(&mut self, v: &Value) {
        match v {
            Value::None => self.out.push(b'N'),
            Value::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            Value::Int(i) => self.int(*i),
            Value::Float(f) => {
                self.out.push(b'G');
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Str(s) => {
                self.out.push(b'X');
                self.out.extend_from_slice(
                    &u32::try_from(s.len()).expect("short string").to_le_bytes(),
                );
                self.out.extend_from_slice(s.as_bytes());
            }
            Value::Bytes(b) => {
                self.out.push(b'B');
                self.out.extend_from_slice(
                    &u32::try_from(b.len())
                        .expect("bytes under 4 GiB")
                        .to_le_bytes(),
                );
                self.out.extend_from_slice(b);
            }
            Value::List(items) => {
                self.out.push(b']');
                if !items.is_empty() {
                    self.out.push(b'(');
                    items.iter().for_each(|i| self.value(i));
                    self.out.push(b'e');
                }
            }
            Value::Tuple(items) => match items.len() {
                0 => self.out.push(b')'),
                n @ 1..=3 => {
                    items.iter().for_each(|i| self.value(i));
                    self.out.push(0x84 + u8::try_from(n).expect("1..=3"));
                }
                _ => {
                    self.out.push(b'(');
                    items.iter().for_each(|i| self.value(i));
                    self.out.push(b't');
                }
            },
            Value::Dict(items) => {
                self.out.push(b'}');
                if !items.is_empty() {
                    self.out.push(b'(');
                    for (k, v) in items {
                        self.value(k);
                        self.value(v);
                    }
                    self.out.push(b'u');
                }
            }
            Value::Set(items) => {
                // Protocol 2 has no set opcodes: `builtins.set([...])`, as pickle writes it.
                self.value(&Value::Call(
                    Box::new(Value::Global("builtins".into(), "set".into())),
                    vec![Value::List(items.clone())],
                ));
            }
            Value::Global(m, n) => {
                self.out.push(b'c');
                self.out.extend_from_slice(m.as_bytes());
                self.out.push(b'\n');
                self.out.extend_from_slice(n.as_bytes());
                self.out.push(b'\n');
            }
            Value::Call(f, args) => {
                self.value(f);
                self.value(&Value::Tuple(args.clone()));
                self.out.push(b'R');
            }
            Value::Build(obj, state) => {
                self.value(obj);
                self.value(state);
                self.out.push(b'b');
            }
            Value::Persistent(pid) => {
                self.value(pid);
                self.out.push(b'Q');
            }
        }
    }

    fn int(&mut self, i: i64) {
        if let Ok(b) = u8::try_from(i) {
            self.out.extend_from_slice(&[b'K', b]);
        } else if let Ok(h) = u16::try_from(i) {
            self.out.push(b'M');
            self.out.extend_from_slice(&h.to_le_bytes());
        } else if let Ok(w) = i32::try_from(i) {
            self.out.push(b'J');
            self.out.extend_from_slice(&w.to_le_bytes());
        } else {
            // LONG1 with the fewest bytes that keep the sign, as pickle writes it.
            let bytes = i.to_le_bytes();
            let mut n = 8;
            while n > 1 {
                let (last, prev) = (bytes[n - 1], bytes[n - 2]);
                if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
                    n -= 1;
                } else {
                    break;
                }
            }
            self.out
                .extend_from_slice(&[0x8a, u8::try_from(n).expect("1..=8")]);
            self.out.extend_from_slice(&bytes[..n]);
        }
    }

    /// Raw bytes (a `LONG1` the writer cannot express as a [`Value`], for instance).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// End the stream (`STOP`) and return it.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b'.');
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_writer_writes_the_reader_reads_back() {
        let v = Value::Dict(vec![
            (
                Value::Str("a".into()),
                Value::List(vec![Value::Int(1), Value::Int(-3)]),
            ),
            (
                Value::Str("b".into()),
                Value::Tuple(vec![
                    Value::Int(70_000),
                    Value::Int(5_000_000_000),
                    Value::Int(-5_000_000_000),
                    Value::Int(i64::MIN),
                    Value::Float(0.5),
                ]),
            ),
            (Value::Str("c".into()), Value::Bytes(vec![0, 1, 2])),
            (
                Value::Str("d".into()),
                Value::Call(
                    Box::new(Value::Global("torch".into(), "device".into())),
                    vec![Value::Str("cpu".into())],
                ),
            ),
        ]);
        let mut w = Writer::new(2);
        w.value(&v);
        let bytes = w.finish();
        let (back, used) = read(&bytes).unwrap();
        assert_eq!(back, v);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn pythons_own_protocol_4_stream_reads() {
        // pickle.dumps({"en": [1, 2], "t": (True, None)}, protocol=4) from CPython 3.11.
        let bytes: &[u8] = b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x02en\x94]\x94(K\x01K\x02e\x8c\x01t\x94\x88N\x86\x94u.";
        let (v, _) = read(bytes).unwrap();
        assert_eq!(
            v,
            Value::Dict(vec![
                (
                    Value::Str("en".into()),
                    Value::List(vec![Value::Int(1), Value::Int(2)])
                ),
                (
                    Value::Str("t".into()),
                    Value::Tuple(vec![Value::Bool(true), Value::None])
                ),
            ])
        );
    }

    #[test]
    fn a_truncated_or_text_pickle_is_an_error_naming_the_byte() {
        let err = read(b"\x80\x02]q\x00(K\x01").unwrap_err();
        assert!(err.contains("truncated at byte"), "{err}");
        let err = read(b"(lp0\nI1\na.").unwrap_err();
        assert!(err.contains("opcode 0x70 at byte 2"), "{err}");
    }
}

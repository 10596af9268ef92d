//! A restricted reader for PyTorch zip checkpoints (`torch.save` of a state dict): a pickle
//! machine that knows only the opcodes and the four callables a state dict uses, runs no
//! code, and checks every declared size against the bytes in the archive before allocating.
//!
//! candle's own reader panics on malformed `_rebuild_tensor_v2` tuples and trusts declared
//! sizes, so the `.bin` path goes through this one instead.

use candle_core::{DType, Device, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Seek};
use std::rc::Rc;

/// The largest `data.pkl` read (a state dict's pickle is a few hundred bytes per tensor).
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// How many times over the tensors may view their storages' bytes (tied weights share one).
pub const MAX_VIEW_FANOUT: u64 = 4;

/// One tensor as the pickle declares it: a view into a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDecl {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
    pub offset: usize,
    /// The storage's key (its file is `<prefix>/data/<key>`) and its declared length in elements.
    pub storage: String,
    pub storage_len: usize,
}

impl TensorDecl {
    /// Elements in the view (checked).
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// Bytes the view takes once read (checked).
    pub fn bytes(&self) -> Option<usize> {
        self.numel()?.checked_mul(self.dtype.size_in_bytes())
    }

    fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected = expected.saturating_mul(d);
        }
        true
    }

    /// One past the last storage element the view touches, or None when it overflows.
    fn end(&self) -> Option<usize> {
        if self.shape.contains(&0) {
            return Some(self.offset);
        }
        self.shape
            .iter()
            .zip(&self.stride)
            .try_fold(self.offset, |end, (&d, &s)| {
                end.checked_add((d - 1).checked_mul(s)?)
            })?
            .checked_add(1)
    }
}

/// Reads every tensor of a PyTorch zip checkpoint onto the CPU, refusing (with a message that
/// names the entry or tensor and the sizes) anything malformed, any storage whose declared
/// size is not in the archive, and more than `max_bytes` of tensor data in all.
pub fn read_pth<R: Read + Seek>(
    reader: R,
    file_len: u64,
    max_bytes: u64,
) -> Result<Vec<(String, Tensor)>, String> {
    let mut archive = zip::ZipArchive::new(reader).map_err(|e| {
        format!("not a PyTorch zip checkpoint ({e}); only the zip format of torch ≥ 1.6 is read")
    })?;
    let pickle_name = (0..archive.len())
        .filter_map(|i| archive.name_for_index(i).and_then(|n| n.ok()))
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
        .map(|n| n.into_owned())
        .ok_or("the archive has no <name>/data.pkl")?;
    let prefix = pickle_name.trim_end_matches("data.pkl").to_string();
    if let Some(order) = read_small_entry(&mut archive, &format!("{prefix}byteorder"))? {
        if order.trim_ascii() != b"little" {
            return Err(format!(
                "{prefix}byteorder is {:?}; only little-endian checkpoints are read",
                String::from_utf8_lossy(&order)
            ));
        }
    }
    let pickle = read_entry(&mut archive, &pickle_name, MAX_PICKLE_BYTES.min(file_len))?;
    let decls = parse_state_dict(&pickle).map_err(|e| format!("{pickle_name}: {e}"))?;

    // Every size is checked before anything is allocated: storages against their entries,
    // views against their storages, the sum against the budget.
    let mut storages: HashMap<&str, (DType, usize)> = HashMap::new();
    let mut total: u64 = 0;
    for d in &decls {
        match storages.get(d.storage.as_str()) {
            Some(&(dtype, len)) if dtype != d.dtype || len != d.storage_len => {
                return Err(format!(
                    "tensor {}: storage {} is declared twice with different types or sizes",
                    d.name, d.storage
                ));
            }
            Some(_) => {}
            None => {
                storages.insert(&d.storage, (d.dtype, d.storage_len));
            }
        }
        let end = d
            .end()
            .ok_or_else(|| format!("tensor {}: shape × stride overflows", d.name))?;
        if end > d.storage_len {
            return Err(format!(
                "tensor {}: shape {:?} with stride {:?} at offset {} reaches element {end}, but its storage holds {}",
                d.name, d.shape, d.stride, d.offset, d.storage_len
            ));
        }
        let bytes = d
            .bytes()
            .ok_or_else(|| format!("tensor {}: shape {:?} overflows", d.name, d.shape))?;
        total = total.saturating_add(bytes as u64);
    }
    let mut storage_bytes: u64 = 0;
    for (&key, &(dtype, len)) in &storages {
        let name = format!("{prefix}data/{key}");
        let want = (len as u64)
            .checked_mul(dtype.size_in_bytes() as u64)
            .ok_or_else(|| format!("{name}: {len} elements overflow"))?;
        let index = archive
            .index_for_name(&name)
            .ok_or_else(|| format!("storage {name} is missing from the archive"))?;
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| format!("{name}: {e}"))?;
        if entry.size() < want || entry.compressed_size() > file_len {
            return Err(format!(
                "{name}: declared {len} × {dtype:?} = {want} bytes, but the entry holds {}",
                entry.size()
            ));
        }
        storage_bytes = storage_bytes.saturating_add(want);
    }
    // Views may share a storage (tied weights), but a small file must not fan one storage
    // out into gigabytes of copies.
    if total
        > storage_bytes
            .saturating_mul(MAX_VIEW_FANOUT)
            .saturating_add(1 << 16)
    {
        return Err(format!(
            "the tensors take {total} bytes but their storages only {storage_bytes}: more than {MAX_VIEW_FANOUT} views of the same data"
        ));
    }
    let need = total.saturating_add(storage_bytes);
    if need > max_bytes {
        return Err(format!(
            "reading it needs {} MiB, more than the {} MiB allowed",
            need >> 20,
            max_bytes >> 20
        ));
    }

    let mut data: HashMap<String, Vec<u8>> = HashMap::new();
    for (&key, &(dtype, len)) in &storages {
        let name = format!("{prefix}data/{key}");
        let want = (len * dtype.size_in_bytes()) as u64;
        let mut bytes = read_entry(&mut archive, &name, want)?;
        bytes.truncate(want as usize);
        if (bytes.len() as u64) < want {
            return Err(format!(
                "{name}: {} bytes where {want} were declared",
                bytes.len()
            ));
        }
        data.insert(key.to_string(), bytes);
    }
    let mut out = Vec::with_capacity(decls.len());
    for d in decls {
        let storage = data
            .get(&d.storage)
            .ok_or_else(|| format!("tensor {}: storage {} was not read", d.name, d.storage))?;
        let bytes = view_bytes(&d, storage);
        let tensor = Tensor::from_raw_buffer(&bytes, d.dtype, &d.shape, &Device::Cpu)
            .map_err(|e| format!("tensor {}: {e}", d.name))?;
        out.push((d.name, tensor));
    }
    Ok(out)
}

/// The bytes of a view (checked in bounds by the caller), gathered when it is not contiguous.
fn view_bytes(d: &TensorDecl, storage: &[u8]) -> Vec<u8> {
    let size = d.dtype.size_in_bytes();
    let numel = d.numel().unwrap_or(0);
    if d.is_contiguous() {
        let start = d.offset * size;
        return storage[start..start + numel * size].to_vec();
    }
    let mut out = Vec::with_capacity(numel * size);
    let mut index = vec![0usize; d.shape.len()];
    for _ in 0..numel {
        let element = d.offset
            + index
                .iter()
                .zip(&d.stride)
                .map(|(&i, &s)| i * s)
                .sum::<usize>();
        out.extend_from_slice(&storage[element * size..(element + 1) * size]);
        for axis in (0..index.len()).rev() {
            index[axis] += 1;
            if index[axis] < d.shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

/// An entry read whole, refusing one that is compressed or larger than `limit` bytes.
fn read_entry<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, String> {
    let entry = archive.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    if entry.compression() != zip::CompressionMethod::Stored {
        return Err(format!(
            "{name} is compressed ({:?}); torch.save stores entries uncompressed",
            entry.compression()
        ));
    }
    if entry.size() > limit {
        return Err(format!(
            "{name} is {} bytes, more than the {limit} read",
            entry.size()
        ));
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(bytes)
}

/// A small optional entry (`byteorder`), or None when the archive has none.
fn read_small_entry<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
) -> Result<Option<Vec<u8>>, String> {
    if archive.index_for_name(name).is_none() {
        return Ok(None);
    }
    read_entry(archive, name, 64).map(Some)
}

/// A pickled value: only what a state dict holds. Containers are shared, as in Python, so that
/// memo lookups are cheap and `SETITEMS` on a memoised dict changes the one dict.
#[derive(Clone)]
enum Value {
    None,
    /// Booleans and floats are read but never needed (`requires_grad`, hooks' state).
    Bool,
    Int(i64),
    Float,
    Str(Rc<str>),
    Tuple(Rc<Items>),
    List(Rc<RefCell<Items>>),
    Dict(Rc<RefCell<Pairs>>),
    Global(Rc<(String, String)>),
    Storage(Rc<(DType, String, usize)>),
    Tensor(Rc<TensorDecl>),
}

/// A tuple's or list's items. Dropped without recursion: a pickle can nest a million tuples
/// in a megabyte, which a recursive drop would overflow the stack on.
#[derive(Default)]
struct Items(Vec<Value>);

/// A dict's entries, in insertion order; dropped like [`Items`].
#[derive(Default)]
struct Pairs(Vec<(Value, Value)>);

impl Drop for Items {
    fn drop(&mut self) {
        drop_flat(std::mem::take(&mut self.0));
    }
}

impl Drop for Pairs {
    fn drop(&mut self) {
        let pending = std::mem::take(&mut self.0)
            .into_iter()
            .flat_map(|(k, v)| [k, v])
            .collect();
        drop_flat(pending);
    }
}

/// Drops values, moving the children of each container this was the last owner of onto a
/// work list instead of recursing into them.
fn drop_flat(mut pending: Vec<Value>) {
    while let Some(value) = pending.pop() {
        match value {
            Value::Tuple(rc) => {
                if let Ok(mut items) = Rc::try_unwrap(rc) {
                    pending.append(&mut items.0);
                }
            }
            Value::List(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    pending.append(&mut cell.into_inner().0);
                }
            }
            Value::Dict(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    let mut pairs = cell.into_inner();
                    for (k, v) in std::mem::take(&mut pairs.0) {
                        pending.push(k);
                        pending.push(v);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Value {
    /// What kind of value this is, for error messages (never its contents: they may nest
    /// deeply or refer to themselves).
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// The dtype a `torch.*Storage` class holds; integer storages are named so the error can say
/// what the tensor is.
fn storage_dtype(class: &str) -> Result<DType, String> {
    match class {
        "FloatStorage" => Ok(DType::F32),
        "HalfStorage" => Ok(DType::F16),
        "BFloat16Storage" => Ok(DType::BF16),
        "DoubleStorage" => Ok(DType::F64),
        "LongStorage" | "IntStorage" | "ShortStorage" | "CharStorage" | "ByteStorage"
        | "BoolStorage" => Err(format!(
            "a {class} where model weights must be floating point"
        )),
        other => Err(format!("unknown storage class torch.{other}")),
    }
}

/// Runs the pickle of a state dict; returns its tensors in the order they were written.
pub fn parse_state_dict(pickle: &[u8]) -> Result<Vec<TensorDecl>, String> {
    let top = Machine::new(pickle).run()?;
    let Value::Dict(entries) = top else {
        return Err(format!(
            "the pickle holds a {} where a state dict was expected",
            top.kind()
        ));
    };
    let entries = entries.borrow();
    let mut out = Vec::with_capacity(entries.0.len());
    for (key, value) in entries.0.iter() {
        let Value::Str(name) = key else {
            return Err(format!("a state dict key is a {}, not a str", key.kind()));
        };
        let Value::Tensor(t) = value else {
            return Err(format!(
                "entry {name:?} is a {}, not a tensor (is this a whole training checkpoint? save the model's state_dict)",
                value.kind()
            ));
        };
        let mut t = TensorDecl::clone(t);
        t.name = name.to_string();
        out.push(t);
    }
    Ok(out)
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Machine {
            bytes,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.pos))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("GLOBAL without a newline")?;
        let text = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(text)
    }

    fn text(&mut self, n: usize) -> Result<Value, String> {
        let raw = self.take(n)?;
        Ok(Value::Str(Rc::from(String::from_utf8_lossy(raw).as_ref())))
    }

    fn pop(&mut self) -> Result<Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(format!("stack underflow at byte {}", self.pos));
        }
        self.stack
            .pop()
            .ok_or_else(|| format!("stack underflow at byte {}", self.pos))
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        let pos = self.pos;
        self.stack
            .last_mut()
            .ok_or_else(|| format!("empty stack at byte {pos}"))
    }

    /// The values above the last MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| format!("no MARK at byte {}", self.pos))?;
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn memo_get(&self, key: u32) -> Result<Value, String> {
        self.memo
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("memo {key} is not set (byte {})", self.pos))
    }

    fn run(mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("pickle protocol {proto} is not known"));
                    }
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Rc::default())),
                b']' => self.stack.push(Value::List(Rc::default())),
                b')' => self.stack.push(Value::Tuple(Rc::default())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(Items(items))));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(Rc::new(Items(items))));
                }
                b'q' => {
                    let key = u32::from(self.u8()?);
                    let v = self.top()?.clone();
                    self.memo.insert(key, v);
                }
                b'r' => {
                    let key = u32::from_le_bytes(self.le()?);
                    let v = self.top()?.clone();
                    self.memo.insert(key, v);
                }
                0x94 => {
                    let key = u32::try_from(self.memo.len()).map_err(|_| "memo overflow")?;
                    let v = self.top()?.clone();
                    self.memo.insert(key, v);
                }
                b'h' => {
                    let key = u32::from(self.u8()?);
                    let v = self.memo_get(key)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let key = u32::from_le_bytes(self.le()?);
                    let v = self.memo_get(key)?;
                    self.stack.push(v);
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a => {
                    let n = usize::from(self.u8()?);
                    if n > 8 {
                        return Err(format!("a {n}-byte integer at byte {at} is too large"));
                    }
                    let raw = self.take(n)?;
                    let mut buf = [0u8; 8];
                    buf[..n].copy_from_slice(raw);
                    if n > 0 && n < 8 && raw[n - 1] & 0x80 != 0 {
                        buf[n..].fill(0xff);
                    }
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)));
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(Value::Float);
                }
                b'N' => self.stack.push(Value::None),
                0x88 | 0x89 => self.stack.push(Value::Bool),
                b'X' | b'T' => {
                    let n = u32::from_le_bytes(self.le()?) as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8c | b'U' => {
                    let n = usize::from(self.u8()?);
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = usize::try_from(u64::from_le_bytes(self.le()?))
                        .map_err(|_| format!("a string at byte {at} is too long"))?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(Rc::new((module, name))));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self
                            .stack
                            .push(Value::Global(Rc::new((m.to_string(), n.to_string())))),
                        _ => return Err(format!("STACK_GLOBAL at byte {at} without two strs")),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = persistent_storage(&pid).map_err(|e| format!("byte {at}: {e}"))?;
                    self.stack.push(storage);
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(&callable, &args).map_err(|e| format!("byte {at}: {e}"))?;
                    self.stack.push(v);
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    dict_of(self.top()?, at)?.borrow_mut().0.push((key, value));
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(format!("SETITEMS at byte {at} with an odd count"));
                    }
                    let dict = dict_of(self.top()?, at)?;
                    let mut dict = dict.borrow_mut();
                    let mut items = items.into_iter();
                    while let (Some(k), Some(v)) = (items.next(), items.next()) {
                        dict.0.push((k, v));
                    }
                }
                b'a' => {
                    let value = self.pop()?;
                    list_of(self.top()?, at)?.borrow_mut().0.push(value);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    list_of(self.top()?, at)?.borrow_mut().0.extend(items);
                }
                b'b' => {
                    // BUILD sets state (an OrderedDict's `_metadata`, a parameter's
                    // attributes) that loading weights does not need.
                    self.pop()?;
                    self.top()?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                other => {
                    return Err(format!(
                        "pickle opcode 0x{other:02x} at byte {at} is not one a state dict uses; refused"
                    ))
                }
            }
        }
    }
}

fn dict_of(v: &Value, at: usize) -> Result<Rc<RefCell<Pairs>>, String> {
    match v {
        Value::Dict(d) => Ok(d.clone()),
        other => Err(format!("SETITEM at byte {at} on a {}", other.kind())),
    }
}

fn list_of(v: &Value, at: usize) -> Result<Rc<RefCell<Items>>, String> {
    match v {
        Value::List(l) => Ok(l.clone()),
        other => Err(format!("APPEND at byte {at} on a {}", other.kind())),
    }
}

fn int(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} is negative ({i})")),
        other => Err(format!("{what} is a {}, not an int", other.kind())),
    }
}

fn ints(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) => items.0.iter().map(|i| int(i, what)).collect(),
        other => Err(format!("{what} is a {}, not a tuple", other.kind())),
    }
}

/// `('storage', torch.XStorage, key, location, numel)`, as `torch.save` writes it.
fn persistent_storage(pid: &Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err(format!("a persistent id is a {}", pid.kind()));
    };
    let [tag, class, key, _location, numel] = items.0.as_slice() else {
        return Err(format!(
            "a storage id has {} fields where 5 are written",
            items.0.len()
        ));
    };
    if !matches!(tag, Value::Str(s) if &**s == "storage") {
        return Err("a persistent id that is not a storage".into());
    }
    let Value::Global(class) = class else {
        return Err(format!("a storage class is a {}", class.kind()));
    };
    if class.0 != "torch" {
        return Err(format!("unknown storage class {}.{}", class.0, class.1));
    }
    let dtype = storage_dtype(&class.1)?;
    let Value::Str(key) = key else {
        return Err(format!("a storage key is a {}", key.kind()));
    };
    if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") {
        return Err(format!("storage key {key:?} is not a plain name"));
    }
    let numel = int(numel, "a storage's size")?;
    Ok(Value::Storage(Rc::new((dtype, key.to_string(), numel))))
}

/// The callables a state dict's pickle calls; anything else is refused by name.
fn reduce(callable: &Value, args: &Value) -> Result<Value, String> {
    let Value::Global(global) = callable else {
        return Err(format!("REDUCE calls a {}", callable.kind()));
    };
    let Value::Tuple(args) = args else {
        return Err(format!("REDUCE with {} arguments", args.kind()));
    };
    let args = &args.0;
    let (module, name) = (global.0.as_str(), global.1.as_str());
    match (module, name) {
        ("collections", "OrderedDict") if args.is_empty() => Ok(Value::Dict(Rc::default())),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
            if args.len() < 4 {
                return Err(format!(
                    "{name} with {} arguments (storage, offset, size and stride are needed)",
                    args.len()
                ));
            }
            let Value::Storage(storage) = &args[0] else {
                return Err(format!("{name}: the storage is a {}", args[0].kind()));
            };
            let offset = int(&args[1], "a storage offset")?;
            let shape = ints(&args[2], "a tensor size")?;
            let stride = ints(&args[3], "a tensor stride")?;
            if shape.len() != stride.len() {
                return Err(format!(
                    "{name}: size {shape:?} and stride {stride:?} differ in length"
                ));
            }
            let (dtype, key, storage_len) = storage.as_ref().clone();
            Ok(Value::Tensor(Rc::new(TensorDecl {
                name: String::new(),
                dtype,
                shape,
                stride,
                offset,
                storage: key,
                storage_len,
            })))
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            match args.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                Some(other) => Err(format!("{name} of a {}", other.kind())),
                None => Err(format!("{name} with no arguments")),
            }
        }
        _ => Err(format!(
            "the pickle calls {module}.{name}, which a state dict does not need; refused"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dit_pixel_bin/diffusion_pytorch_model.bin"
    );

    /// A state dict pickle with one tensor `w` built by `_rebuild_tensor_v2(args)`.
    fn pickle_with_rebuild(args: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'(', b'X', 1, 0, 0, 0, b'w'];
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.extend_from_slice(args);
        p.extend_from_slice(b"tRu.");
        p
    }

    fn storage_pid_key(class: &str, key: &str, numel: u16) -> Vec<u8> {
        let mut p = b"(X\x07\x00\x00\x00storagectorch\n".to_vec();
        p.extend_from_slice(class.as_bytes());
        p.push(b'\n');
        p.push(b'X');
        p.extend_from_slice(&(key.len() as u32).to_le_bytes());
        p.extend_from_slice(key.as_bytes());
        p.extend_from_slice(b"X\x03\x00\x00\x00cpuM");
        p.extend_from_slice(&numel.to_le_bytes());
        p.extend_from_slice(b"tQ");
        p
    }

    fn storage_pid(class: &str, numel: u8) -> Vec<u8> {
        let mut p = b"(X\x07\x00\x00\x00storagectorch\n".to_vec();
        p.extend_from_slice(class.as_bytes());
        p.extend_from_slice(b"\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK");
        p.push(numel);
        p.extend_from_slice(b"tQ");
        p
    }

    #[test]
    fn the_fixture_reads_with_every_tensor_a_float_view() {
        let bytes = std::fs::read(FIXTURE).unwrap();
        let len = bytes.len() as u64;
        let tensors = read_pth(std::io::Cursor::new(bytes), len, 1 << 30).unwrap();
        assert!(tensors.len() > 10);
        assert!(tensors.iter().any(|(n, _)| n == "pos_embed.proj.weight"));
        for (_, t) in &tensors {
            assert_eq!(t.dtype(), DType::F32);
        }
    }

    #[test]
    fn a_rebuild_with_too_few_arguments_is_an_error_not_a_panic() {
        // candle's reader panicked here (`args.remove(3)`).
        let mut args = storage_pid("FloatStorage", 4);
        args.extend_from_slice(b"K\x00");
        let err = parse_state_dict(&pickle_with_rebuild(&args)).unwrap_err();
        assert!(err.contains("with 2 arguments"), "{err}");
    }

    #[test]
    fn a_storage_id_with_too_few_fields_is_an_error() {
        // candle's reader panicked here too (`storage.remove(4)`).
        let args = b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\ntQK\x00(K\x02t(K\x01t";
        let err = parse_state_dict(&pickle_with_rebuild(args)).unwrap_err();
        assert!(err.contains("2 fields"), "{err}");
    }

    #[test]
    fn an_integer_storage_is_refused_by_name() {
        let mut args = storage_pid("LongStorage", 4);
        args.extend_from_slice(b"K\x00(K\x04t(K\x01t\x89");
        let err = parse_state_dict(&pickle_with_rebuild(&args)).unwrap_err();
        assert!(err.contains("LongStorage"), "{err}");
    }

    #[test]
    fn other_callables_are_refused() {
        let p = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.";
        let err = parse_state_dict(p).unwrap_err();
        assert!(err.contains("os.system"), "{err}");
    }

    #[test]
    fn views_past_their_storage_are_found_before_reading() {
        let mut args = storage_pid("FloatStorage", 4);
        args.extend_from_slice(b"K\x00(K\x03K\x02t(K\x02K\x01t\x89");
        let decls = parse_state_dict(&pickle_with_rebuild(&args)).unwrap();
        assert_eq!(decls[0].end(), Some(6));
        assert!(decls[0].end().unwrap() > decls[0].storage_len);
    }

    #[test]
    fn one_storage_fanned_out_into_many_views_is_refused() {
        // Ten tensors each viewing the whole of storage 2 (8192 floats) of the fixture.
        let bytes = std::fs::read(FIXTURE).unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let mut pickle = vec![0x80, 2, b'}', b'('];
        for i in 0..10u8 {
            pickle.extend_from_slice(&[b'X', 1, 0, 0, 0, b'a' + i]);
            pickle.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
            pickle.extend_from_slice(&storage_pid_key("FloatStorage", "2", 8192));
            pickle.extend_from_slice(b"K\x00(M\x00\x20t(K\x01t\x89tR");
        }
        pickle.extend_from_slice(b"u.");
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).unwrap();
            let name = entry.name().unwrap().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            out.start_file(&name, options).unwrap();
            let body = if name.ends_with("data.pkl") {
                &pickle
            } else {
                &data
            };
            std::io::Write::write_all(&mut out, body).unwrap();
        }
        let zipped = out.finish().unwrap().into_inner();
        let len = zipped.len() as u64;
        let err = read_pth(std::io::Cursor::new(zipped), len, 1 << 30).unwrap_err();
        assert!(err.contains("views of the same data"), "{err}");
    }

    #[test]
    fn a_transposed_view_is_gathered() {
        let d = TensorDecl {
            name: "t".into(),
            dtype: DType::U8,
            shape: vec![2, 3],
            stride: vec![1, 2],
            offset: 0,
            storage: "0".into(),
            storage_len: 6,
        };
        assert!(!d.is_contiguous());
        assert_eq!(view_bytes(&d, &[0, 1, 2, 3, 4, 5]), vec![0, 2, 4, 1, 3, 5]);
    }

    #[test]
    fn a_million_nested_tuples_drop_without_overflowing_the_stack() {
        let mut p = vec![0x80, 2, b')'];
        p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        p.push(b'.');
        let err = parse_state_dict(&p).unwrap_err();
        assert!(err.contains("tuple"), "{err}");
    }

    #[test]
    fn self_referencing_containers_do_not_hang() {
        // A list appended to itself, then dropped: errors must not try to print it.
        let p = b"\x80\x02]q\x00h\x00a.";
        let err = parse_state_dict(p).unwrap_err();
        assert!(err.contains("list"), "{err}");
    }
}

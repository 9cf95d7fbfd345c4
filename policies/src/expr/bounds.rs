//! The input half of the cost model: every variable is checked against the bounds the compile-time
//! estimate assumed before any expression reads it.

use serde_json::Value;

use super::Limits;

/// Refuses inputs outside the cost model's bounds, naming the offending path: per value (items,
/// string bytes, depth) and in total (values and bytes, see [`super::cost`]).
pub fn check_input_bounds(name: &str, value: &Value, limits: &Limits) -> Result<(), String> {
    // The path is only rendered on failure: the walk itself allocates nothing.
    fn walk(v: &Value, depth: usize, limits: &Limits) -> Result<Size, (Vec<String>, String)> {
        if depth > limits.max_depth {
            return Err((
                Vec::new(),
                format!("is nested deeper than {} levels", limits.max_depth),
            ));
        }
        let too_many = |n: usize| (n as u64 > limits.max_collection_items).then_some(n);
        match v {
            Value::String(s) if s.len() as u64 > limits.max_string_bytes => Err((
                Vec::new(),
                format!(
                    "is a string of {} bytes, more than {}",
                    s.len(),
                    limits.max_string_bytes
                ),
            )),
            Value::Array(items) => {
                if let Some(n) = too_many(items.len()) {
                    return Err((
                        Vec::new(),
                        format!("has {n} items, more than {}", limits.max_collection_items),
                    ));
                }
                let mut size = Size::one(0);
                for (i, item) in items.iter().enumerate() {
                    size += walk(item, depth + 1, limits).map_err(|(mut path, m)| {
                        path.push(format!("[{i}]"));
                        (path, m)
                    })?;
                }
                Ok(size)
            }
            Value::Object(map) => {
                if let Some(n) = too_many(map.len()) {
                    return Err((
                        Vec::new(),
                        format!("has {n} entries, more than {}", limits.max_collection_items),
                    ));
                }
                let mut size = Size::one(0);
                for (k, item) in map {
                    size += Size::one(k.len());
                    size += walk(item, depth + 1, limits).map_err(|(mut path, m)| {
                        path.push(format!(".{k}"));
                        (path, m)
                    })?;
                }
                Ok(size)
            }
            Value::String(s) => Ok(Size::one(s.len())),
            Value::Null | Value::Bool(_) | Value::Number(_) => Ok(Size::one(0)),
        }
    }
    let size = walk(value, 0, limits).map_err(|(path, message)| {
        let path: String = path.iter().rev().map(String::as_str).collect();
        format!("{name}{path} {message}")
    })?;
    if size.values > limits.max_input_values {
        return Err(format!(
            "{name} holds {} values, more than {} (keys count too)",
            size.values, limits.max_input_values
        ));
    }
    if size.bytes > limits.max_input_bytes {
        return Err(format!(
            "{name} holds {} bytes of strings, more than {}",
            size.bytes, limits.max_input_bytes
        ));
    }
    Ok(())
}

/// What the cost model counts of an input (see [`super::cost`]).
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    values: u64,
    bytes: u64,
}

impl Size {
    /// One value holding `bytes` of string.
    fn one(bytes: usize) -> Self {
        Self {
            values: 1,
            bytes: bytes as u64,
        }
    }
}

impl std::ops::AddAssign for Size {
    fn add_assign(&mut self, other: Size) {
        self.values += other.values;
        self.bytes += other.bytes;
    }
}

//! Byte-string equality for the hot paths (decoding names and literals, finding group keys),
//! where the strings are a dozen bytes and a `memcmp` call costs more than the comparison.

/// Whether `a` and `b` are the same bytes: up to 16 bytes compared as two (overlapping) words,
/// inline.
#[inline]
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8"));
    match a.len() {
        0..8 => a.iter().zip(b).all(|(x, y)| x == y),
        8..=16 => {
            let last = a.len() - 8;
            word(a, 0) == word(b, 0) && word(a, last) == word(b, last)
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_agrees_with_slice_equality() {
        let words: Vec<Vec<u8>> = (0..40)
            .map(|n| (0..n).map(|i| b'a' + (i % 7) as u8).collect())
            .collect();
        for a in &words {
            for b in &words {
                assert_eq!(super::same(a, b), a == b);
                let mut c = a.clone();
                if let Some(last) = c.last_mut() {
                    *last ^= 1;
                    assert!(!super::same(a, &c));
                    c[0] ^= 2;
                    assert!(!super::same(a, &c));
                }
            }
        }
    }
}

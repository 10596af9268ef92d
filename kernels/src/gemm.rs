//! Matrix products on strided f32 views, through the `gemm` crate's kernels (the ones candle's
//! CPU matmul uses). A view is checked against the slice it borrows when it is made, so the
//! product can never read or write outside it.

use candle_core::Result;

/// The one past the last element a `rows × cols` view with these strides touches.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<usize> {
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?
        .checked_add(1)
}

fn strides_fit(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Result<()> {
    match extent(rows, cols, rs, cs) {
        Some(end) if end <= len && rs <= isize::MAX as usize && cs <= isize::MAX as usize => Ok(()),
        _ => candle_core::bail!(
            "matrix view {rows}×{cols} (strides {rs}, {cs}) does not fit a slice of {len}"
        ),
    }
}

/// A read-only `rows × cols` matrix: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Result<Self> {
        strides_fit(data.len(), rows, cols, rs, cs)?;
        Ok(MatRef {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }

    /// Rows of `cols` contiguous values, one after another.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        MatRef::new(data, rows, cols, cols, 1)
    }

    /// The transpose (a view; nothing moves).
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// A writable `rows × cols` matrix over a borrowed slice.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatMut<'a> {
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Result<Self> {
        strides_fit(data.len(), rows, cols, rs, cs)?;
        Ok(MatMut {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }

    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        MatMut::new(data, rows, cols, cols, 1)
    }
}

/// `dst ← (dst if accumulate, else 0) + scale · a · b`, with the gemm crate's kernels; `threads`
/// above 1 splits it over the current rayon pool.
pub fn matmul(
    dst: MatMut<'_>,
    a: MatRef<'_>,
    b: MatRef<'_>,
    accumulate: bool,
    scale: f32,
    threads: usize,
) -> Result<()> {
    if a.rows != dst.rows || b.cols != dst.cols || a.cols != b.rows {
        candle_core::bail!(
            "matmul shapes: {}×{} · {}×{} into {}×{}",
            a.rows,
            a.cols,
            b.rows,
            b.cols,
            dst.rows,
            dst.cols
        );
    }
    if dst.rows == 0 || dst.cols == 0 {
        return Ok(());
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every view was checked against its slice when it was made (`strides_fit`), so
    // the kernel reads `a` and `b` and writes `dst` only inside their slices; `dst` is a
    // unique borrow, so it aliases neither input. With `k = 0` nothing is read from them.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            a.cols,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn products_match_the_naive_loop_with_strides_and_accumulation() {
        let (m, k, n) = (37, 19, 23);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 13) % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 * 0.5).collect();
        let want = naive(&a, &b, m, k, n);
        let mut out = vec![1f32; m * n];
        matmul(
            MatMut::row_major(&mut out, m, n).unwrap(),
            MatRef::row_major(&a, m, k).unwrap(),
            MatRef::row_major(&b, k, n).unwrap(),
            false,
            1.0,
            1,
        )
        .unwrap();
        assert_eq!(out, want);
        // bᵀ stored as n × k, read through the transposed view; accumulate twice the product.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        matmul(
            MatMut::row_major(&mut out, m, n).unwrap(),
            MatRef::row_major(&a, m, k).unwrap(),
            MatRef::row_major(&bt, n, k).unwrap().t(),
            true,
            2.0,
            2,
        )
        .unwrap();
        let thrice: Vec<f32> = want.iter().map(|v| 3.0 * v).collect();
        assert_eq!(out, thrice);
    }

    #[test]
    fn views_outside_their_slice_and_mismatched_shapes_are_errors() {
        let data = vec![0f32; 10];
        assert!(MatRef::new(&data, 3, 4, 4, 1).is_err());
        assert!(MatRef::new(&data, 2, 5, 5, 1).is_ok());
        assert!(MatRef::new(&data, 2, 2, usize::MAX, 1).is_err());
        let mut out = vec![0f32; 4];
        let a = MatRef::row_major(&data, 2, 5).unwrap();
        assert!(matmul(
            MatMut::row_major(&mut out, 2, 2).unwrap(),
            a,
            a,
            false,
            1.0,
            1
        )
        .is_err());
    }
}

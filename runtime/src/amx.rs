//! Intel AMX (Advanced Matrix Extensions, Sapphire Rapids and later) for the AVX-512 prefill
//! passes: whether this CPU and OS allow it, the one tile configuration the kernels use, and
//! the block products they start and finish.
//!
//! The AVX-512 kernels (`emit::tiled`, `unit_pass`) run 16 tokens of one 16-row weight tile
//! per AMX pass: per 32-column block, `tdpbssd` (or `tdpbsud` for unsigned codes) multiplies
//! the 16 × 32 activation bytes, read in place at the activations' row stride, by the tile's
//! 32 × 16 codes (the tiled layout's step vectors *are* AMX's B layout, 4 consecutive columns
//! of one row per i32 lane), and the 16 × 16 i32 result goes through the same float steps as
//! the register passes. Two slots of tiles let one block's product run while the previous
//! block's float steps do.
//!
//! Linux hands out the 8 KiB of tile state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`):
//! [`available`] asks once for the process. `QWENC_AMX=0` turns AMX off; tests switch it per
//! thread with [`force`].

use std::cell::Cell;
use std::sync::OnceLock;

/// Tokens per AMX pass (rows of the activation tile).
pub const TOKENS: usize = 16;

thread_local! {
    static FORCED: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether the kernels called from this thread run their prefill passes on AMX.
#[inline]
pub fn enabled() -> bool {
    if let Some(on) = FORCED.with(Cell::get) {
        return on;
    }
    static DEFAULT: OnceLock<bool> = OnceLock::new();
    *DEFAULT.get_or_init(|| !switched_off() && available())
}

fn switched_off() -> bool {
    std::env::var("QWENC_AMX").is_ok_and(|v| v == "0")
}

/// What [`enabled`] decides by default, for `info` and `bench`: `"amx-int8"`, or why not.
pub fn status() -> &'static str {
    if switched_off() {
        "off (QWENC_AMX=0)"
    } else if available() {
        "amx-int8"
    } else {
        "unavailable"
    }
}

/// Overrides [`enabled`] on this thread (`None` = the default). Turning AMX on where it is not
/// [`available`] is refused: returns false and changes nothing.
pub fn force(on: Option<bool>) -> bool {
    if on == Some(true) && !available() {
        return false;
    }
    FORCED.with(|f| f.set(on));
    true
}

/// The CPU has AMX-TILE and AMX-INT8, and the OS granted this process the tile state.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // CPUID leaf 7, subleaf 0: EDX bit 24 = AMX-TILE, bit 25 = AMX-INT8.
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    if leaf7.edx & (3 << 24) != 3 << 24 {
        return false;
    }
    // arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): 0 when granted; an error when the
    // kernel or the hypervisor does not enable tile state.
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain system call; it writes no memory of ours.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// 64-byte aligned scratch for a tile in memory (`N` = 512 for the code tile, 1024 for the
/// result tile).
#[repr(C, align(64))]
pub struct TileBuf<const N: usize>(pub [u8; N]);

impl<const N: usize> TileBuf<N> {
    #[inline(always)]
    pub fn new() -> Self {
        TileBuf([0; N])
    }
}

impl<const N: usize> Default for TileBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(target_arch = "x86_64")]
mod tiles {
    use std::arch::asm;

    /// `ldtilecfg` operand: palette 1 and two slots of three tiles, slot 0 = tmm0..tmm2,
    /// slot 1 = tmm3..tmm5: the result, 16 rows × 64 bytes (16 × 16 i32); the activations,
    /// 16 tokens × 32 bytes; the codes, 8 rows × 64 bytes (32 columns × 16 weight rows, 4
    /// columns per i32).
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    static CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        let shapes: [(u8, u16); 3] = [(16, 64), (16, 32), (8, 64)];
        let mut t = 0;
        while t < 6 {
            let (rows, colsb) = shapes[t % 3];
            c[16 + 2 * t] = colsb as u8;
            c[17 + 2 * t] = (colsb >> 8) as u8;
            c[48 + t] = rows;
            t += 1;
        }
        Config(c)
    };

    /// Loads the kernels' tile configuration into this thread's tile registers.
    ///
    /// # Safety
    /// [`super::available`] must be true.
    #[inline]
    pub unsafe fn configure() {
        unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) }
    }

    /// Returns this thread's tile state to the init state (so context switches do not save it).
    ///
    /// # Safety
    /// [`super::available`] must be true.
    #[inline]
    pub unsafe fn release() {
        unsafe { asm!("tilerelease", options(nostack, nomem)) }
    }

    /// Starts, in slot `SLOT`, `C[t][r] = Σ_k a[t·a_stride + k] · b[k/4][4r + k%4]` for 16
    /// tokens `t`, 16 rows `r`, 32 columns `k`: s8 activations × s8 codes (`SIGNED`,
    /// `tdpbssd`) or u8 codes (`tdpbsud`) → i32. The tile registers hold `a` and `b` once
    /// this returns: the caller may overwrite them.
    ///
    /// # Safety
    /// [`configure`] ran on this thread; `a` is readable for 16 rows of 32 bytes at stride
    /// `a_stride`, `b` for 512 bytes.
    #[inline(always)]
    pub unsafe fn start<const SLOT: usize, const SIGNED: bool>(
        a: *const i8,
        a_stride: usize,
        b: *const u8,
    ) {
        macro_rules! product {
            ($c:literal, $a:literal, $b:literal, $op:literal) => {
                asm!(
                    concat!("tilezero ", $c),
                    concat!("tileloadd ", $a, ", [{a} + {sa} * 1]"),
                    concat!("tileloadd ", $b, ", [{b} + {row} * 1]"),
                    concat!($op, " ", $c, ", ", $a, ", ", $b),
                    a = in(reg) a,
                    sa = in(reg) a_stride,
                    b = in(reg) b,
                    row = in(reg) 64usize,
                    options(nostack, readonly),
                )
            };
        }
        unsafe {
            match (SLOT, SIGNED) {
                (0, true) => product!("tmm0", "tmm1", "tmm2", "tdpbssd"),
                (0, false) => product!("tmm0", "tmm1", "tmm2", "tdpbsud"),
                (1, true) => product!("tmm3", "tmm4", "tmm5", "tdpbssd"),
                (1, false) => product!("tmm3", "tmm4", "tmm5", "tdpbsud"),
                _ => unreachable!("AMX slots are 0 and 1"),
            }
        }
    }

    /// Waits for slot `SLOT`'s product and writes it to `c`: 16 rows (tokens) of 16 i32.
    ///
    /// # Safety
    /// [`start`] ran for this slot on this thread; `c` is writable for 1024 bytes.
    #[inline(always)]
    pub unsafe fn finish<const SLOT: usize>(c: *mut u8) {
        unsafe {
            match SLOT {
                0 => {
                    asm!("tilestored [{c} + {row} * 1], tmm0", c = in(reg) c, row = in(reg) 64usize, options(nostack))
                }
                1 => {
                    asm!("tilestored [{c} + {row} * 1], tmm3", c = in(reg) c, row = in(reg) 64usize, options(nostack))
                }
                _ => unreachable!("AMX slots are 0 and 1"),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use tiles::{configure, finish, release, start};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forcing_on_is_refused_where_amx_is_unavailable() {
        if available() {
            assert!(force(Some(true)) && enabled());
        } else {
            assert!(!force(Some(true)) && !enabled());
        }
        assert!(force(Some(false)) && !enabled());
        force(None);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_slots_compute_the_integer_matrix_product() {
        if !available() {
            eprintln!("SKIPPED: this CPU or OS has no AMX-INT8; the AMX products were not checked");
            return;
        }
        let a: Vec<i8> = (0..16 * 40)
            .map(|i| ((i * 37 + 11) % 256) as u8 as i8)
            .collect();
        let mut b = TileBuf::<512>::new();
        for (i, v) in b.0.iter_mut().enumerate() {
            *v = ((i * 101 + 7) % 256) as u8;
        }
        let (mut c0, mut c1) = (TileBuf::<1024>::new(), TileBuf::<1024>::new());
        let (mut c2, mut c3) = (TileBuf::<1024>::new(), TileBuf::<1024>::new());
        // Activation rows 40 bytes apart: the kernels read tokens in place at stride COLS.
        unsafe {
            configure();
            start::<0, true>(a.as_ptr(), 40, b.0.as_ptr());
            start::<1, false>(a.as_ptr(), 40, b.0.as_ptr());
            finish::<0>(c0.0.as_mut_ptr());
            finish::<1>(c1.0.as_mut_ptr());
            start::<1, true>(a.as_ptr(), 40, b.0.as_ptr());
            start::<0, false>(a.as_ptr(), 40, b.0.as_ptr());
            finish::<1>(c2.0.as_mut_ptr());
            finish::<0>(c3.0.as_mut_ptr());
            release();
        }
        let get = |c: &TileBuf<1024>, t: usize, r: usize| {
            i32::from_le_bytes(c.0[(t * 16 + r) * 4..][..4].try_into().unwrap())
        };
        for t in 0..16 {
            for r in 0..16 {
                let dot = |signed: bool| -> i32 {
                    (0..32)
                        .map(|k| {
                            let w = b.0[(k / 4) * 64 + 4 * r + k % 4];
                            let w = if signed { w as i8 as i32 } else { w as i32 };
                            a[t * 40 + k] as i32 * w
                        })
                        .sum()
                };
                assert_eq!(
                    get(&c0, t, r),
                    dot(true),
                    "slot 0 signed: token {t}, row {r}"
                );
                assert_eq!(
                    get(&c1, t, r),
                    dot(false),
                    "slot 1 unsigned: token {t}, row {r}"
                );
                assert_eq!(
                    get(&c2, t, r),
                    dot(true),
                    "slot 1 signed: token {t}, row {r}"
                );
                assert_eq!(
                    get(&c3, t, r),
                    dot(false),
                    "slot 0 unsigned: token {t}, row {r}"
                );
            }
        }
    }
}

//! Image geometry shared by decoding (`download`) and the ImageNet transforms of training:
//! resizing so the shorter side has a given length, torchvision's `RandomResizedCrop`
//! parameters, centre crops, and crop + resize + flip into a square RGB buffer.
//!
//! Images are RGB u8 in HWC order. Resizing is a separable convolution with a bilinear
//! (triangle) kernel widened when downscaling — the antialiased bilinear of Pillow, which
//! torchvision's `Resize`/`RandomResizedCrop` use on PIL images — done by the
//! `fast_image_resize` crate in fixed-point integer arithmetic (the same bytes on every run).
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::prng::Prng;

/// A crop box in pixels of the source image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

fn options(b: CropBox) -> ResizeOptions {
    ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(b.left as f64, b.top as f64, b.width as f64, b.height as f64)
}

/// Crops `b` out of the RGB image `pixels` (`h × w`) and resizes it to `out_h × out_w`.
/// A crop of exactly the output size is copied without resampling.
pub fn crop_resize(
    pixels: &[u8],
    h: usize,
    w: usize,
    b: CropBox,
    out_h: usize,
    out_w: usize,
) -> Vec<u8> {
    assert!(b.top + b.height <= h && b.left + b.width <= w && b.height > 0 && b.width > 0);
    if b.height == out_h && b.width == out_w {
        let mut out = Vec::with_capacity(out_h * out_w * 3);
        for y in b.top..b.top + b.height {
            let row = (y * w + b.left) * 3;
            out.extend_from_slice(&pixels[row..row + b.width * 3]);
        }
        return out;
    }
    let src = ImageRef::new(w as u32, h as u32, pixels, PixelType::U8x3)
        .expect("buffer holds h*w*3 bytes");
    let mut dst = Image::new(out_w as u32, out_h as u32, PixelType::U8x3);
    Resizer::new()
        .resize(&src, &mut dst, &options(b))
        .expect("same pixel type, non-empty crop inside the image");
    dst.into_vec()
}

/// The size `(h, w)` of an `h × w` image resized so that its shorter side is `short`,
/// keeping the aspect ratio as torchvision's `Resize(short)` does (the longer side
/// truncated: `int(short · long / short_side)`).
pub fn shorter_side_size(h: usize, w: usize, short: usize) -> (usize, usize) {
    if h <= w {
        (short, (short as u64 * w as u64 / h as u64) as usize)
    } else {
        ((short as u64 * h as u64 / w as u64) as usize, short)
    }
}

/// Resizes an RGB image so that its shorter side is `short` (up or down); returns the new
/// `(h, w, pixels)`. An image already that size is returned as is.
pub fn resize_shorter(
    pixels: Vec<u8>,
    h: usize,
    w: usize,
    short: usize,
) -> (usize, usize, Vec<u8>) {
    let (nh, nw) = shorter_side_size(h, w, short);
    if (nh, nw) == (h, w) {
        return (h, w, pixels);
    }
    let full = CropBox {
        top: 0,
        left: 0,
        height: h,
        width: w,
    };
    let out = crop_resize(&pixels, h, w, full, nh, nw);
    (nh, nw, out)
}

/// The centre `size × size` box of an `h × w` image (torchvision's `CenterCrop`: offsets
/// `round((h − size) / 2)`); None when the image is smaller than `size`.
pub fn center_box(h: usize, w: usize, size: usize) -> Option<CropBox> {
    if h < size || w < size {
        return None;
    }
    let off = |n: usize| ((n - size) as f64 / 2.0).round() as usize;
    Some(CropBox {
        top: off(h),
        left: off(w),
        height: size,
        width: size,
    })
}

/// torchvision's `RandomResizedCrop.get_params`: up to ten draws of an area fraction
/// uniform in `scale` and a log-uniform aspect ratio in `ratio`, accepting the first box
/// that fits; otherwise the central box with the ratio clamped into `ratio`.
pub fn random_resized_box(
    h: usize,
    w: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut Prng,
) -> CropBox {
    let area = (h * w) as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * (scale.0 + (scale.1 - scale.0) * rng.unit_f64());
        let aspect = (lr0 + (lr1 - lr0) * rng.unit_f64()).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if cw > 0 && cw <= w && ch > 0 && ch <= h {
            let top = rng.below((h - ch + 1) as u64) as usize;
            let left = rng.below((w - cw + 1) as u64) as usize;
            return CropBox {
                top,
                left,
                height: ch,
                width: cw,
            };
        }
    }
    let in_ratio = w as f64 / h as f64;
    let (ch, cw) = if in_ratio < ratio.0 {
        (((w as f64) / ratio.0).round() as usize, w)
    } else if in_ratio > ratio.1 {
        (h, ((h as f64) * ratio.1).round() as usize)
    } else {
        (h, w)
    };
    let (ch, cw) = (ch.clamp(1, h), cw.clamp(1, w));
    CropBox {
        top: (h - ch) / 2,
        left: (w - cw) / 2,
        height: ch,
        width: cw,
    }
}

/// Mirrors a square-or-not RGB buffer left–right in place.
pub fn flip_horizontal(pixels: &mut [u8], h: usize, w: usize) {
    for y in 0..h {
        let row = &mut pixels[y * w * 3..(y + 1) * w * 3];
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
}

/// The ImageNet training transform: `RandomResizedCrop(size, scale, ratio)` and, with
/// `flip`, a horizontal flip with probability ½.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomResizedCrop {
    pub size: usize,
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
    pub flip: bool,
}

impl RandomResizedCrop {
    /// Transforms one image, drawing from `rng` (the box first, then the flip bit).
    /// Returns `size × size × 3` bytes.
    pub fn apply(&self, pixels: &[u8], h: usize, w: usize, rng: &mut Prng) -> Vec<u8> {
        let b = random_resized_box(h, w, self.scale, self.ratio, rng);
        let mut out = crop_resize(pixels, h, w, b, self.size, self.size);
        if self.flip && rng.below(2) == 1 {
            flip_horizontal(&mut out, self.size, self.size);
        }
        out
    }
}

/// The ImageNet evaluation transform: `Resize(resize)` (shorter side) then
/// `CenterCrop(size)`. When the image's shorter side already is `resize` (images decoded
/// by `download` with `resize: 256` and the default size 224) this is a plain crop.
pub fn resize_center_crop(
    pixels: &[u8],
    h: usize,
    w: usize,
    resize: usize,
    size: usize,
) -> Vec<u8> {
    let (nh, nw) = shorter_side_size(h, w, resize);
    let resized;
    let (src, sh, sw) = if (nh, nw) == (h, w) {
        (pixels, h, w)
    } else {
        resized = resize_shorter(pixels.to_vec(), h, w, resize).2;
        (&resized[..], nh, nw)
    };
    let b = center_box(sh, sw, size).unwrap_or(CropBox {
        // `resize` < `size` is refused by the parameter checks; stay total anyway.
        top: 0,
        left: 0,
        height: sh,
        width: sw,
    });
    crop_resize(src, sh, sw, b, size, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(h: usize, w: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(h * w * 3);
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&[(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 77]);
            }
        }
        v
    }

    #[test]
    fn shorter_side_keeps_the_aspect_ratio_like_torchvision() {
        // torchvision.transforms.Resize(256) on a 480x640 (h x w) image gives 256x341.
        assert_eq!(shorter_side_size(480, 640, 256), (256, 341));
        assert_eq!(shorter_side_size(640, 480, 256), (341, 256));
        assert_eq!(shorter_side_size(100, 100, 256), (256, 256));
        let (h, w, px) = resize_shorter(gradient(30, 60), 30, 60, 16);
        assert_eq!((h, w, px.len()), (16, 32, 16 * 32 * 3));
        // Constant channels stay constant through the resampling.
        assert!(px.chunks(3).all(|p| p[2] == 77));
        let same = gradient(16, 20);
        assert_eq!(resize_shorter(same.clone(), 16, 20, 16).2, same);
    }

    #[test]
    fn center_box_matches_torchvision_offsets() {
        // CenterCrop(224) of 256x341: top round(16) = 16, left round(58.5) = 58 (banker's
        // rounding in Python gives 58 too: int(round(58.5)) == 58).
        let b = center_box(256, 341, 224).unwrap();
        assert_eq!((b.top, b.height, b.width), (16, 224, 224));
        assert!(b.left == 58 || b.left == 59);
        assert_eq!(center_box(10, 300, 224), None);
    }

    #[test]
    fn random_boxes_fit_and_follow_the_seed() {
        let mut a = Prng::new(3, "t");
        let mut b = Prng::new(3, "t");
        for _ in 0..200 {
            let x = random_resized_box(256, 341, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut a);
            let y = random_resized_box(256, 341, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut b);
            assert_eq!(x, y);
            assert!(x.top + x.height <= 256 && x.left + x.width <= 341);
            let frac = (x.height * x.width) as f64 / (256.0 * 341.0);
            assert!(frac > 0.07 && frac <= 1.0, "{frac}");
        }
        // An impossible scale falls back to the central box with the ratio clamped.
        let mut r = Prng::new(0, "t");
        let b = random_resized_box(10, 100, (5.0, 6.0), (0.75, 4.0 / 3.0), &mut r);
        assert_eq!((b.height, b.width, b.top), (10, 13, 0));
        assert_eq!(b.left, (100 - 13) / 2);
    }

    #[test]
    fn crops_resize_and_flip() {
        let img = gradient(40, 50);
        let mut r = Prng::new(1, "t");
        let t = RandomResizedCrop {
            size: 24,
            scale: (0.08, 1.0),
            ratio: (0.75, 4.0 / 3.0),
            flip: true,
        };
        let out = t.apply(&img, 40, 50, &mut r);
        assert_eq!(out.len(), 24 * 24 * 3);
        // An exact-size crop is a copy; flipping twice is the identity.
        let b = CropBox {
            top: 5,
            left: 7,
            height: 10,
            width: 12,
        };
        let c = crop_resize(&img, 40, 50, b, 10, 12);
        assert_eq!(&c[..3], &img[(5 * 50 + 7) * 3..(5 * 50 + 7) * 3 + 3]);
        let mut f = c.clone();
        flip_horizontal(&mut f, 10, 12);
        assert_eq!(&f[..3], &c[11 * 3..12 * 3]);
        flip_horizontal(&mut f, 10, 12);
        assert_eq!(f, c);
        // Eval: shorter side already 32 -> plain centre crop.
        let e = resize_center_crop(&gradient(32, 48), 32, 48, 32, 28);
        let b = center_box(32, 48, 28).unwrap();
        assert_eq!(e, crop_resize(&gradient(32, 48), 32, 48, b, 28, 28));
        assert_eq!(
            resize_center_crop(&gradient(60, 90), 60, 90, 36, 32).len(),
            32 * 32 * 3
        );
    }
}

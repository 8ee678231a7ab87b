//! QUIC client Initial packets (RFC 9000 §17.2.2, RFC 9001 §5, RFC 9369 for version 2):
//! header parsing, removal of header protection, AEAD decryption with the Initial keys
//! derived from the client's Destination Connection ID, and the CRYPTO frames inside.
//!
//! Initial keys are public by design (anyone who sees the first packet can derive them), so a
//! passive observer can read the ClientHello and its server name. Nothing beyond the Initial
//! packet number space is touched: Handshake and 1-RTT packets are encrypted with keys an
//! observer does not have.
//!
//! Cryptography is `ring` (HKDF-SHA256, AES-128-GCM, AES-128 header protection), already in
//! the build for rustls. Decryption works in a caller-provided scratch buffer: no allocation.

use ring::aead::quic::{AES_128, HeaderProtectionKey};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, KeyType, Prk, Salt};

/// QUIC version 1 (RFC 9000).
pub const VERSION_1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369).
pub const VERSION_2: u32 = 0x6b33_43cf;

const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];

/// Longest connection ID (RFC 9000 §17.2).
pub const MAX_CID: usize = 20;

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
fn expand_label(prk: &Prk, label: &[u8], out: &mut [u8]) -> Option<()> {
    let len = (out.len() as u16).to_be_bytes();
    let label_len = [6 + label.len() as u8];
    let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
    prk.expand(&info, Len(out.len())).ok()?.fill(out).ok()
}

/// The client's Initial packet protection keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialKeys {
    /// AEAD key.
    pub key: [u8; 16],
    /// AEAD IV.
    pub iv: [u8; 12],
    /// Header protection key.
    pub hp: [u8; 16],
}

/// Derives the client Initial keys for `version` from the client's original Destination
/// Connection ID. `None` for other versions.
pub fn client_initial_keys(version: u32, dcid: &[u8]) -> Option<InitialKeys> {
    let (salt, labels): (&[u8], [&[u8]; 3]) = match version {
        VERSION_1 => (&SALT_V1, [b"quic key", b"quic iv", b"quic hp"]),
        VERSION_2 => (&SALT_V2, [b"quicv2 key", b"quicv2 iv", b"quicv2 hp"]),
        _ => return None,
    };
    let initial = Salt::new(HKDF_SHA256, salt).extract(dcid);
    let mut client = [0u8; 32];
    expand_label(&initial, b"client in", &mut client)?;
    let client = Prk::new_less_safe(HKDF_SHA256, &client);
    let mut k = InitialKeys {
        key: [0; 16],
        iv: [0; 12],
        hp: [0; 16],
    };
    expand_label(&client, labels[0], &mut k.key)?;
    expand_label(&client, labels[1], &mut k.iv)?;
    expand_label(&client, labels[2], &mut k.hp)?;
    Some(k)
}

/// A QUIC variable-length integer (RFC 9000 §16) at `*p`.
pub fn varint(b: &[u8], p: &mut usize) -> Option<u64> {
    let first = *b.get(*p)?;
    let len = 1usize << (first >> 6);
    let s = b.get(*p..*p + len)?;
    let mut v = u64::from(first & 0x3f);
    for &x in &s[1..] {
        v = (v << 8) | u64::from(x);
    }
    *p += len;
    Some(v)
}

/// The fields of a long-header Initial packet needed to decrypt it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialHeader<'a> {
    /// Version.
    pub version: u32,
    /// Destination Connection ID.
    pub dcid: &'a [u8],
    /// Offset of the (protected) packet number.
    pub pn_offset: usize,
    /// Offset just past this packet (its `Length` field), so coalesced packets can follow.
    pub end: usize,
}

/// Parses the header of a long-header Initial packet at the start of `d` (version 1 or 2).
/// `None` for anything else (short header, other types or versions, malformed lengths).
pub fn initial_header(d: &[u8]) -> Option<InitialHeader<'_>> {
    let first = *d.first()?;
    if first & 0xc0 != 0xc0 {
        return None; // not a long header with the fixed bit
    }
    let version = u32::from_be_bytes(d.get(1..5)?.try_into().ok()?);
    let ty = (first >> 4) & 0x03;
    let initial = match version {
        VERSION_1 => ty == 0,
        VERSION_2 => ty == 1,
        _ => false,
    };
    if !initial {
        return None;
    }
    let mut p = 5;
    let dlen = usize::from(*d.get(p)?);
    if dlen > MAX_CID {
        return None;
    }
    let dcid = d.get(p + 1..p + 1 + dlen)?;
    p += 1 + dlen;
    let slen = usize::from(*d.get(p)?);
    if slen > MAX_CID {
        return None;
    }
    p += 1 + slen;
    let token = varint(d, &mut p)?;
    p = p.checked_add(usize::try_from(token).ok()?)?;
    let length = usize::try_from(varint(d, &mut p)?).ok()?;
    let end = p.checked_add(length)?;
    if end > d.len() || length < 20 {
        return None;
    }
    Some(InitialHeader {
        version,
        dcid,
        pn_offset: p,
        end,
    })
}

/// Removes header protection and decrypts the Initial packet `pkt` (exactly one packet, from
/// its first byte to `hdr.end`) with `keys`, using `scratch` (at least the packet's length).
/// Returns the plaintext frames inside `scratch`.
pub fn decrypt<'s>(
    pkt: &[u8],
    hdr: &InitialHeader<'_>,
    keys: &InitialKeys,
    scratch: &'s mut [u8],
) -> Option<&'s [u8]> {
    let n = hdr.end;
    if scratch.len() < n || pkt.len() < n {
        return None;
    }
    let buf = &mut scratch[..n];
    buf.copy_from_slice(&pkt[..n]);
    let sample: [u8; 16] = buf
        .get(hdr.pn_offset + 4..hdr.pn_offset + 20)?
        .try_into()
        .ok()?;
    let hp = HeaderProtectionKey::new(&AES_128, &keys.hp).ok()?;
    let mask = hp.new_mask(&sample).ok()?;
    buf[0] ^= mask[0] & 0x0f;
    let pn_len = usize::from(buf[0] & 0x03) + 1;
    let mut pn: u64 = 0;
    for i in 0..pn_len {
        buf[hdr.pn_offset + i] ^= mask[1 + i];
        pn = (pn << 8) | u64::from(buf[hdr.pn_offset + i]);
    }
    let header_len = hdr.pn_offset + pn_len;
    let mut nonce = keys.iv;
    for (i, b) in pn.to_be_bytes().iter().enumerate() {
        nonce[4 + i] ^= b;
    }
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &keys.key).ok()?);
    let (aad, body) = buf.split_at_mut(header_len);
    let plain = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&*aad), body)
        .ok()?;
    let len = plain.len();
    Some(&scratch[header_len..header_len + len])
}

/// Calls `crypto(offset, data)` for every CRYPTO frame in the plaintext `frames` of an
/// Initial packet. Returns `false` on a frame that may not appear in Initial packets or is
/// malformed (the frames before it were delivered).
pub fn crypto_frames(frames: &[u8], mut crypto: impl FnMut(u64, &[u8])) -> bool {
    let mut p = 0usize;
    while p < frames.len() {
        let Some(ty) = varint(frames, &mut p) else {
            return false;
        };
        match ty {
            0x00 | 0x01 => {} // PADDING, PING
            0x02 | 0x03 => {
                // ACK: largest, delay, range count, first range, ranges, [ECN counts]
                let mut fields = || varint(frames, &mut p);
                let (Some(_), Some(_), Some(count), Some(_)) =
                    (fields(), fields(), fields(), fields())
                else {
                    return false;
                };
                for _ in 0..count.min(1 << 16) * 2 {
                    if varint(frames, &mut p).is_none() {
                        return false;
                    }
                }
                if ty == 0x03 {
                    for _ in 0..3 {
                        if varint(frames, &mut p).is_none() {
                            return false;
                        }
                    }
                }
            }
            0x06 => {
                let (Some(off), Some(len)) = (varint(frames, &mut p), varint(frames, &mut p))
                else {
                    return false;
                };
                let Ok(len) = usize::try_from(len) else {
                    return false;
                };
                let Some(data) = frames.get(p..p.saturating_add(len)) else {
                    return false;
                };
                crypto(off, data);
                p += len;
            }
            0x1c => return true, // CONNECTION_CLOSE: nothing after it matters
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc9001_appendix_a_keys() {
        let k = client_initial_keys(VERSION_1, &hex("8394c8f03e515708")).unwrap();
        assert_eq!(k.key.to_vec(), hex("1f369613dd76d5467730efcbe3b1a22d"));
        assert_eq!(k.iv.to_vec(), hex("fa044b2f42a3fd3b46fb255c"));
        assert_eq!(k.hp.to_vec(), hex("9f50449e04a0e810283a1e9933adedd2"));
        assert!(client_initial_keys(0xff00_001d, b"x").is_none());
        assert_ne!(
            client_initial_keys(VERSION_2, &hex("8394c8f03e515708")),
            Some(k)
        );
    }

    /// Protects an Initial packet the way a client does (for tests): `frames` is padded to
    /// `total` bytes of payload.
    pub(crate) fn protect(
        version: u32,
        dcid: &[u8],
        pn: u32,
        frames: &[u8],
        total: usize,
    ) -> Vec<u8> {
        let keys = client_initial_keys(version, dcid).unwrap();
        let ty = if version == VERSION_2 { 1u8 } else { 0 };
        let mut h = vec![0xc0 | (ty << 4) | 0x03];
        h.extend_from_slice(&version.to_be_bytes());
        h.push(dcid.len() as u8);
        h.extend_from_slice(dcid);
        h.push(0); // scid
        h.push(0); // token
        let plen = total + 4 + 16;
        h.push(0x40 | (plen >> 8) as u8);
        h.push(plen as u8);
        let pn_offset = h.len();
        h.extend_from_slice(&pn.to_be_bytes());
        let mut payload = frames.to_vec();
        payload.resize(total, 0);
        let mut nonce = keys.iv;
        for (i, b) in u64::from(pn).to_be_bytes().iter().enumerate() {
            nonce[4 + i] ^= b;
        }
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &keys.key).unwrap());
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&h[..]),
            &mut payload,
        )
        .unwrap();
        let mut pkt = h;
        pkt.extend_from_slice(&payload);
        let sample: [u8; 16] = pkt[pn_offset + 4..pn_offset + 20].try_into().unwrap();
        let mask = HeaderProtectionKey::new(&AES_128, &keys.hp)
            .unwrap()
            .new_mask(&sample)
            .unwrap();
        pkt[0] ^= mask[0] & 0x0f;
        for i in 0..4 {
            pkt[pn_offset + i] ^= mask[1 + i];
        }
        pkt
    }

    pub(crate) fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0x06];
        f.extend_from_slice(&(0x8000_0000u32 | offset as u32).to_be_bytes());
        f.extend_from_slice(&(0x4000u16 | data.len() as u16).to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn round_trip_v1_and_v2() {
        for version in [VERSION_1, VERSION_2] {
            let dcid = hex("0011223344556677");
            let mut frames = vec![0x01];
            frames.extend(crypto_frame(5, b"world"));
            frames.extend(crypto_frame(0, b"hello"));
            let pkt = protect(version, &dcid, 1, &frames, 1162);
            let hdr = initial_header(&pkt).unwrap();
            assert_eq!(hdr.dcid, &dcid[..]);
            assert_eq!(hdr.end, pkt.len());
            let keys = client_initial_keys(version, hdr.dcid).unwrap();
            let mut scratch = [0u8; 1500];
            let plain = decrypt(&pkt, &hdr, &keys, &mut scratch).unwrap();
            let mut got = Vec::new();
            assert!(crypto_frames(plain, |o, d| got.push((o, d.to_vec()))));
            assert_eq!(got, vec![(5, b"world".to_vec()), (0, b"hello".to_vec())]);
            // a flipped ciphertext bit fails authentication
            let mut bad = pkt.clone();
            bad[40] ^= 1;
            assert!(decrypt(&bad, &hdr, &keys, &mut scratch).is_none());
            // wrong keys
            let other = client_initial_keys(version, b"other").unwrap();
            assert!(decrypt(&pkt, &hdr, &other, &mut scratch).is_none());
        }
    }

    #[test]
    fn headers_that_are_not_initials() {
        assert!(initial_header(&[0x40, 1, 2, 3]).is_none()); // short header
        let mut h = vec![0xe0]; // v1 Handshake
        h.extend_from_slice(&VERSION_1.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0x40, 30]);
        h.resize(60, 0);
        assert!(initial_header(&h).is_none());
        h[0] = 0xc0;
        h[1..5].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        assert!(initial_header(&h).is_none()); // unknown version
        let mut p = 0;
        assert_eq!(varint(&[0x25], &mut p), Some(37));
        p = 0;
        assert_eq!(varint(&[0x7b, 0xbd], &mut p), Some(15293));
        p = 0;
        assert_eq!(varint(&[0x9d, 0x7f, 0x3e, 0x7d], &mut p), Some(494_878_333));
        assert!(!crypto_frames(&[0x08], |_, _| {}));
        assert!(crypto_frames(&[0, 0, 1], |_, _| {}));
    }
}

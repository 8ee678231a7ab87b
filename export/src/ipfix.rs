//! IPFIX export (RFC 7011) with bidirectional flows (RFC 5103).
//!
//! An [`Encoder`] turns records of registered [`Template`]s into IPFIX
//! Messages no longer than a configured size (the path MTU for UDP); the
//! caller writes each record field by field through a [`RecordWriter`],
//! which checks the field's length against the template, so a record type's
//! owner (the probe) maps its own record to IPFIX without this crate knowing
//! it. [`UdpExporter`] and [`TcpExporter`] send the messages; a [`Decoder`]
//! parses messages back (used by the tests, and handy for collectors).
//!
//! Wire format (RFC 7011 §3): a 16-byte Message Header (version 10, length,
//! export time, sequence number, observation domain), then Sets: Template
//! Sets (Set ID 2) carrying Template Records (§3.4.1), and Data Sets whose
//! Set ID is the Template ID (≥ 256). Integers are big-endian; unsigned
//! values may use reduced-size encoding (§6.2), which the writer applies
//! when a template declares a field shorter than 8 bytes and rejects values
//! that do not fit. Variable-length fields (length 65535) carry a 1-byte or
//! 3-byte length prefix (§7).
//!
//! Sequence numbers count Data Records sent before the message, modulo
//! 2^32, per observation domain (§3.1). Over UDP templates are resent every
//! [`UdpExporter::template_interval`] (§8.4); over TCP they are sent once
//! at the start of the connection.
//!
//! The same [`RecordBatch`]es that go to Parquet can go to IPFIX:
//! [`template_for_schema`] maps an [`ExportSchema`]'s elements to fields
//! (standard ones with [`iana_field`]) and [`Encoder::batch`] writes every
//! row. IPFIX has no null: a null is written as zero, the unspecified
//! address or an empty string.
//!
//! Biflows (RFC 5103 §6.1): reverse-direction Information Elements are the
//! forward IE numbers with the enterprise bit set and the Private Enterprise
//! Number [`REVERSE_PEN`] (29305); see [`FieldSpec::reverse`].

use std::collections::HashMap;
use std::io::{self, Write};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampNanosecondType, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;

use crate::schema::{Column, ExportSchema};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

/// IPFIX version number in the Message Header.
pub const VERSION: u16 = 10;
/// Set ID of Template Sets.
pub const TEMPLATE_SET_ID: u16 = 2;
/// Set ID of Options Template Sets.
pub const OPTIONS_TEMPLATE_SET_ID: u16 = 3;
/// Smallest Template ID (and Data Set ID).
pub const MIN_TEMPLATE_ID: u16 = 256;
/// Field length meaning "variable length".
pub const VARLEN: u16 = 65535;
/// Private Enterprise Number of reverse Information Elements (RFC 5103).
pub const REVERSE_PEN: u32 = 29305;
/// Message Header length.
pub const HEADER_LEN: usize = 16;
/// Set Header length.
pub const SET_HEADER_LEN: usize = 4;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
pub const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// A safe message size for UDP over Ethernet (1500 − IPv6 40 − UDP 8).
pub const DEFAULT_UDP_MESSAGE_LEN: usize = 1452;

/// IANA Information Element numbers used by flow records
/// (<https://www.iana.org/assignments/ipfix>).
pub mod ie {
    /// octetDeltaCount (unsigned64).
    pub const OCTET_DELTA_COUNT: u16 = 1;
    /// packetDeltaCount (unsigned64).
    pub const PACKET_DELTA_COUNT: u16 = 2;
    /// protocolIdentifier (unsigned8).
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    /// ipClassOfService (unsigned8).
    pub const IP_CLASS_OF_SERVICE: u16 = 5;
    /// tcpControlBits (unsigned16).
    pub const TCP_CONTROL_BITS: u16 = 6;
    /// sourceTransportPort (unsigned16).
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    /// sourceIPv4Address (ipv4Address).
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    /// ingressInterface (unsigned32).
    pub const INGRESS_INTERFACE: u16 = 10;
    /// destinationTransportPort (unsigned16).
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    /// destinationIPv4Address (ipv4Address).
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    /// sourceIPv6Address (ipv6Address).
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    /// destinationIPv6Address (ipv6Address).
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    /// flowEndReason (unsigned8).
    pub const FLOW_END_REASON: u16 = 136;
    /// flowStartMilliseconds (dateTimeMilliseconds).
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    /// flowEndMilliseconds (dateTimeMilliseconds).
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    /// flowStartNanoseconds (dateTimeNanoseconds).
    pub const FLOW_START_NANOSECONDS: u16 = 156;
    /// flowEndNanoseconds (dateTimeNanoseconds).
    pub const FLOW_END_NANOSECONDS: u16 = 157;
    /// biflowDirection (unsigned8, RFC 5103 §6.3).
    pub const BIFLOW_DIRECTION: u16 = 239;
    /// deltaFlowCount (unsigned64).
    pub const DELTA_FLOW_COUNT: u16 = 3;
    /// exporterIPv4Address (ipv4Address).
    pub const EXPORTER_IPV4_ADDRESS: u16 = 130;
    /// exporterIPv6Address (ipv6Address).
    pub const EXPORTER_IPV6_ADDRESS: u16 = 131;
    /// flowStartSeconds (dateTimeSeconds).
    pub const FLOW_START_SECONDS: u16 = 150;
    /// flowEndSeconds (dateTimeSeconds).
    pub const FLOW_END_SECONDS: u16 = 151;
    /// flowStartMicroseconds (dateTimeMicroseconds).
    pub const FLOW_START_MICROSECONDS: u16 = 154;
    /// flowEndMicroseconds (dateTimeMicroseconds).
    pub const FLOW_END_MICROSECONDS: u16 = 155;
}

/// IPFIX encoding and decoding errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpfixError {
    /// Template IDs start at 256.
    #[error("template id {0} is below 256")]
    BadTemplateId(u16),
    /// A template needs at least one field.
    #[error("template {0} has no fields")]
    EmptyTemplate(u16),
    /// A zero-length field, or an enterprise number with the top bit set.
    #[error("invalid field specifier {0:?}")]
    BadField(FieldSpec),
    /// A record names a template that was not registered / received.
    #[error("unknown template {0}")]
    UnknownTemplate(u16),
    /// A record wrote the wrong number of fields.
    #[error("record of template {template} has {got} fields, template has {expected}")]
    FieldCount {
        /// Template ID.
        template: u16,
        /// Fields in the template.
        expected: usize,
        /// Fields written.
        got: usize,
    },
    /// A value does not fit its field (wrong fixed length, or an unsigned
    /// value too large for the reduced-size encoding).
    #[error("field {index} (IE {ie}, {len} bytes) cannot hold this value")]
    ValueDoesNotFit {
        /// Field index in the template.
        index: usize,
        /// Information Element number.
        ie: u16,
        /// Field length.
        len: u16,
    },
    /// A single record (plus headers) is larger than the message size.
    #[error("record of {0} bytes does not fit a message")]
    RecordTooLarge(usize),
    /// Not an IPFIX message.
    #[error("bad IPFIX version {0}")]
    BadVersion(u16),
    /// A length field points outside the message.
    #[error("truncated or malformed IPFIX message at offset {0}")]
    Malformed(usize),
    /// An element of an export schema has no IPFIX field.
    #[error("no IPFIX field for element {0:?}")]
    Unmapped(String),
    /// A batch column's type cannot be written to its field.
    #[error("column {0} of the batch cannot be written as IPFIX")]
    BadColumn(usize),
    /// Sending failed.
    #[error("IPFIX transport error: {0}")]
    Io(#[from] io::Error),
}

/// A Field Specifier (RFC 7011 §3.2): Information Element, length and
/// enterprise number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldSpec {
    /// Information Element identifier (15 bits).
    pub id: u16,
    /// Field length in bytes, or [`VARLEN`].
    pub length: u16,
    /// Private Enterprise Number, `None` for IANA elements.
    pub enterprise: Option<u32>,
}

impl FieldSpec {
    /// An IANA Information Element.
    pub const fn iana(id: u16, length: u16) -> FieldSpec {
        FieldSpec {
            id,
            length,
            enterprise: None,
        }
    }

    /// The reverse-direction counterpart of an IANA element (RFC 5103).
    pub const fn reverse(self) -> FieldSpec {
        FieldSpec {
            id: self.id,
            length: self.length,
            enterprise: Some(REVERSE_PEN),
        }
    }

    fn wire_len(&self) -> usize {
        if self.enterprise.is_some() { 8 } else { 4 }
    }
}

/// A Template: an ID and its ordered fields. An Options Template (RFC 7011 §3.4.2) also
/// says how many of its first fields are scope fields (what the options describe, e.g. the
/// observation domain); it travels in an Options Template Set (Set ID 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    id: u16,
    fields: Vec<FieldSpec>,
    /// Scope fields (0: an ordinary template).
    scope: u16,
}

impl Template {
    /// Checks and builds a template.
    pub fn new(id: u16, fields: Vec<FieldSpec>) -> Result<Template, IpfixError> {
        if id < MIN_TEMPLATE_ID {
            return Err(IpfixError::BadTemplateId(id));
        }
        if fields.is_empty() {
            return Err(IpfixError::EmptyTemplate(id));
        }
        for f in &fields {
            if f.length == 0 || f.id & 0x8000 != 0 {
                return Err(IpfixError::BadField(*f));
            }
        }
        Ok(Template {
            id,
            fields,
            scope: 0,
        })
    }

    /// Checks and builds an Options Template whose first `scope` fields are its scope
    /// (at least one, RFC 7011 §3.4.2.2).
    pub fn options(id: u16, scope: u16, fields: Vec<FieldSpec>) -> Result<Template, IpfixError> {
        let mut t = Template::new(id, fields)?;
        if scope == 0 || usize::from(scope) > t.fields.len() {
            return Err(IpfixError::EmptyTemplate(id));
        }
        t.scope = scope;
        Ok(t)
    }

    /// Number of scope fields (0 for an ordinary template).
    pub fn scope_fields(&self) -> u16 {
        self.scope
    }

    /// The Template ID.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The fields, in order.
    pub fn fields(&self) -> &[FieldSpec] {
        &self.fields
    }

    fn encoded_len(&self) -> usize {
        let header = if self.scope > 0 { 6 } else { 4 };
        header + self.fields.iter().map(FieldSpec::wire_len).sum::<usize>()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&(self.fields.len() as u16).to_be_bytes());
        if self.scope > 0 {
            out.extend_from_slice(&self.scope.to_be_bytes());
        }
        for f in &self.fields {
            match f.enterprise {
                None => out.extend_from_slice(&f.id.to_be_bytes()),
                Some(_) => out.extend_from_slice(&(f.id | 0x8000).to_be_bytes()),
            }
            out.extend_from_slice(&f.length.to_be_bytes());
            if let Some(pen) = f.enterprise {
                out.extend_from_slice(&pen.to_be_bytes());
            }
        }
    }
}

/// Writes one Data Record, field by field, in template order.
#[derive(Debug)]
pub struct RecordWriter<'a> {
    out: &'a mut Vec<u8>,
    template: &'a Template,
    index: usize,
}

impl RecordWriter<'_> {
    fn next_field(&mut self) -> Result<(usize, FieldSpec), IpfixError> {
        let i = self.index;
        let f = *self.template.fields.get(i).ok_or(IpfixError::FieldCount {
            template: self.template.id,
            expected: self.template.fields.len(),
            got: i + 1,
        })?;
        self.index += 1;
        Ok((i, f))
    }

    fn misfit(index: usize, f: FieldSpec) -> IpfixError {
        IpfixError::ValueDoesNotFit {
            index,
            ie: f.id,
            len: f.length,
        }
    }

    /// An unsigned integer in the field's length (1–8 bytes, reduced-size
    /// encoding); fails if the value does not fit.
    pub fn unsigned(&mut self, v: u64) -> Result<&mut Self, IpfixError> {
        let (i, f) = self.next_field()?;
        let len = usize::from(f.length);
        if len == 0 || len > 8 || (len < 8 && v >> (8 * len) != 0) {
            return Err(Self::misfit(i, f));
        }
        self.out.extend_from_slice(&v.to_be_bytes()[8 - len..]);
        Ok(self)
    }

    /// A float64 (8-byte field) or float32 (4-byte field, reduced-size
    /// encoding, RFC 7011 §6.2).
    pub fn float(&mut self, v: f64) -> Result<&mut Self, IpfixError> {
        let (i, f) = self.next_field()?;
        match f.length {
            8 => self.out.extend_from_slice(&v.to_be_bytes()),
            4 => self.out.extend_from_slice(&(v as f32).to_be_bytes()),
            _ => return Err(Self::misfit(i, f)),
        }
        Ok(self)
    }

    /// A boolean (1 byte: 1 = true, 2 = false, RFC 7011 §6.1.5).
    pub fn boolean(&mut self, v: bool) -> Result<&mut Self, IpfixError> {
        self.unsigned_in(1, if v { 1 } else { 2 })
    }

    /// An IPv4 address (4-byte field).
    pub fn ipv4(&mut self, a: Ipv4Addr) -> Result<&mut Self, IpfixError> {
        self.fixed(&a.octets())
    }

    /// An IPv6 address (16-byte field).
    pub fn ipv6(&mut self, a: Ipv6Addr) -> Result<&mut Self, IpfixError> {
        self.fixed(&a.octets())
    }

    /// An address in a 4- or 16-byte field (IPv4-mapped IPv6 addresses are
    /// written as IPv4 into a 4-byte field).
    pub fn ip(&mut self, a: IpAddr) -> Result<&mut Self, IpfixError> {
        match a {
            IpAddr::V4(v4) => self.ipv4(v4),
            IpAddr::V6(v6) => {
                let len = self.template.fields.get(self.index).map(|f| f.length);
                match (len, v6.to_ipv4_mapped()) {
                    (Some(4), Some(v4)) => self.ipv4(v4),
                    _ => self.ipv6(v6),
                }
            }
        }
    }

    /// dateTimeMilliseconds (8 bytes) from ns since the Unix epoch.
    pub fn time_ms(&mut self, ns: i64) -> Result<&mut Self, IpfixError> {
        self.unsigned(u64::try_from(ns.max(0) / 1_000_000).unwrap_or(0))
    }

    /// dateTimeSeconds (4 bytes) from ns since the Unix epoch.
    pub fn time_s(&mut self, ns: i64) -> Result<&mut Self, IpfixError> {
        self.unsigned(u64::try_from(ns.max(0) / 1_000_000_000).unwrap_or(0))
    }

    /// dateTimeNanoseconds (8 bytes, NTP format: seconds since 1900 and a
    /// 2^-32 s fraction, RFC 7011 §6.1.10) from ns since the Unix epoch.
    pub fn time_ns(&mut self, ns: i64) -> Result<&mut Self, IpfixError> {
        let ns = u64::try_from(ns.max(0)).unwrap_or(0);
        let secs = (ns / 1_000_000_000 + NTP_UNIX_OFFSET) & 0xffff_ffff;
        let frac = ((ns % 1_000_000_000) << 32) / 1_000_000_000;
        self.unsigned_in(8, (secs << 32) | frac)
    }

    fn unsigned_in(&mut self, len: u16, v: u64) -> Result<&mut Self, IpfixError> {
        let (i, f) = self.next_field()?;
        if f.length != len {
            return Err(Self::misfit(i, f));
        }
        self.out
            .extend_from_slice(&v.to_be_bytes()[8 - usize::from(len)..]);
        Ok(self)
    }

    /// Bytes for a fixed-length field of exactly this length, or a
    /// variable-length field.
    pub fn bytes(&mut self, b: &[u8]) -> Result<&mut Self, IpfixError> {
        let (i, f) = self.next_field()?;
        if f.length == VARLEN {
            if b.len() < 255 {
                self.out.push(b.len() as u8);
            } else if let Ok(n) = u16::try_from(b.len()) {
                self.out.push(255);
                self.out.extend_from_slice(&n.to_be_bytes());
            } else {
                return Err(Self::misfit(i, f));
            }
        } else if usize::from(f.length) != b.len() {
            return Err(Self::misfit(i, f));
        }
        self.out.extend_from_slice(b);
        Ok(self)
    }

    /// A string: variable-length field, or a fixed-length one padded with
    /// zero bytes (RFC 7011 §6.1.6 allows no truncation, so longer fails).
    pub fn string(&mut self, s: &str) -> Result<&mut Self, IpfixError> {
        let f = self.template.fields.get(self.index).copied();
        match f {
            Some(f) if f.length != VARLEN && s.len() < usize::from(f.length) => {
                let mut padded = s.as_bytes().to_vec();
                padded.resize(usize::from(f.length), 0);
                self.bytes(&padded)
            }
            _ => self.bytes(s.as_bytes()),
        }
    }

    fn fixed(&mut self, b: &[u8]) -> Result<&mut Self, IpfixError> {
        let (i, f) = self.next_field()?;
        if usize::from(f.length) != b.len() {
            return Err(Self::misfit(i, f));
        }
        self.out.extend_from_slice(b);
        Ok(self)
    }
}

/// Builds IPFIX Messages of one observation domain.
#[derive(Debug)]
pub struct Encoder {
    domain: u32,
    max_len: usize,
    templates: HashMap<u16, Template>,
    order: Vec<u16>,
    /// Data records sent in finished messages (the next sequence number).
    sequence: u32,
    export_time: u32,
    cur: Vec<u8>,
    /// (set id, offset of its set header in `cur`).
    cur_set: Option<(u16, usize)>,
    records_in_cur: u32,
    done: Vec<Vec<u8>>,
    scratch: Vec<u8>,
}

impl Encoder {
    /// An encoder for `domain` producing messages of at most `max_len`
    /// bytes (at least 64).
    pub fn new(domain: u32, max_len: usize) -> Encoder {
        Encoder {
            domain,
            max_len: max_len.clamp(64, usize::from(u16::MAX)),
            templates: HashMap::new(),
            order: Vec::new(),
            sequence: 0,
            export_time: 0,
            cur: Vec::new(),
            cur_set: None,
            records_in_cur: 0,
            done: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Registers (or replaces) a template.
    pub fn add_template(&mut self, t: Template) -> Result<(), IpfixError> {
        if HEADER_LEN + SET_HEADER_LEN + t.encoded_len() > self.max_len {
            return Err(IpfixError::RecordTooLarge(t.encoded_len()));
        }
        if !self.templates.contains_key(&t.id) {
            self.order.push(t.id);
        }
        self.templates.insert(t.id, t);
        Ok(())
    }

    /// Sets the export time (seconds since the Unix epoch) written into the
    /// headers of messages finished from now on.
    pub fn set_export_time(&mut self, secs: u32) {
        self.export_time = secs;
    }

    /// The sequence number the next message will carry.
    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    /// Messages carrying all registered templates (one or more, each within
    /// the size limit). Finishes the message in progress first.
    pub fn template_messages(&mut self) -> Vec<Vec<u8>> {
        self.finish_message();
        let mut out = Vec::new();
        // ordinary templates in Template Sets, then options templates in Options Template Sets
        for options in [false, true] {
            let mut msg = Vec::new();
            for id in &self.order {
                let Some(t) = self.templates.get(id) else {
                    continue;
                };
                if (t.scope > 0) != options {
                    continue;
                }
                let need = t.encoded_len();
                if !msg.is_empty() && msg.len() + need > self.max_len {
                    out.push(self.seal(std::mem::take(&mut msg), options));
                }
                if msg.is_empty() {
                    msg.resize(HEADER_LEN + SET_HEADER_LEN, 0);
                }
                t.encode(&mut msg);
            }
            if !msg.is_empty() {
                out.push(self.seal(msg, options));
            }
        }
        out
    }

    /// Fills in the message and set headers of a template message.
    fn seal(&self, mut msg: Vec<u8>, options: bool) -> Vec<u8> {
        let set_len = (msg.len() - HEADER_LEN) as u16;
        let set_id = if options {
            OPTIONS_TEMPLATE_SET_ID
        } else {
            TEMPLATE_SET_ID
        };
        msg[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&set_id.to_be_bytes());
        msg[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&set_len.to_be_bytes());
        self.write_header(&mut msg);
        msg
    }

    fn write_header(&self, msg: &mut [u8]) {
        let len = msg.len() as u16;
        msg[0..2].copy_from_slice(&VERSION.to_be_bytes());
        msg[2..4].copy_from_slice(&len.to_be_bytes());
        msg[4..8].copy_from_slice(&self.export_time.to_be_bytes());
        msg[8..12].copy_from_slice(&self.sequence.to_be_bytes());
        msg[12..16].copy_from_slice(&self.domain.to_be_bytes());
    }

    /// Appends one Data Record of template `id`, written by `f`. Starts a
    /// new message when the current one would exceed the size limit.
    pub fn record<F>(&mut self, id: u16, f: F) -> Result<(), IpfixError>
    where
        F: FnOnce(&mut RecordWriter<'_>) -> Result<(), IpfixError>,
    {
        let t = self
            .templates
            .get(&id)
            .ok_or(IpfixError::UnknownTemplate(id))?;
        self.scratch.clear();
        let mut w = RecordWriter {
            out: &mut self.scratch,
            template: t,
            index: 0,
        };
        f(&mut w)?;
        if w.index != t.fields.len() {
            return Err(IpfixError::FieldCount {
                template: id,
                expected: t.fields.len(),
                got: w.index,
            });
        }
        let rec = self.scratch.len();
        if HEADER_LEN + SET_HEADER_LEN + rec > self.max_len {
            return Err(IpfixError::RecordTooLarge(rec));
        }
        let same_set = matches!(self.cur_set, Some((s, _)) if s == id);
        let need = rec + if same_set { 0 } else { SET_HEADER_LEN };
        if !self.cur.is_empty() && self.cur.len() + need > self.max_len {
            self.finish_message();
        }
        if self.cur.is_empty() {
            self.cur.resize(HEADER_LEN, 0);
        }
        if !matches!(self.cur_set, Some((s, _)) if s == id) {
            self.close_set();
            self.cur_set = Some((id, self.cur.len()));
            self.cur.extend_from_slice(&id.to_be_bytes());
            self.cur.extend_from_slice(&[0, 0]);
        }
        self.cur.extend_from_slice(&self.scratch);
        self.records_in_cur += 1;
        Ok(())
    }

    fn close_set(&mut self) {
        if let Some((_, at)) = self.cur_set.take() {
            let len = (self.cur.len() - at) as u16;
            self.cur[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        }
    }

    fn finish_message(&mut self) {
        if self.cur.is_empty() {
            return;
        }
        self.close_set();
        let mut msg = std::mem::take(&mut self.cur);
        self.write_header(&mut msg);
        self.sequence = self.sequence.wrapping_add(self.records_in_cur);
        self.records_in_cur = 0;
        self.done.push(msg);
    }

    /// Appends every row of `batch` as a Data Record of template `id`; the
    /// batch's columns must be in template order (as
    /// [`template_for_schema`] makes them). Returns the rows written.
    ///
    /// Column types: `UInt64` → unsigned, `Float64` → float, `Boolean` →
    /// boolean, `Timestamp(ns)` → by field (4 bytes: dateTimeSeconds; IEs
    /// 154–157 and other NTP-format time IEs: dateTimeMicro/Nanoseconds;
    /// otherwise 8 bytes: dateTimeMilliseconds), `Utf8` → an address when
    /// the field is 4 or 16 bytes (the text is parsed), else a string.
    pub fn batch(&mut self, id: u16, batch: &RecordBatch) -> Result<usize, IpfixError> {
        let t = self
            .templates
            .get(&id)
            .ok_or(IpfixError::UnknownTemplate(id))?;
        if t.fields.len() != batch.num_columns() {
            return Err(IpfixError::FieldCount {
                template: id,
                expected: t.fields.len(),
                got: batch.num_columns(),
            });
        }
        let fields = t.fields.clone();
        let cols = batch.columns();
        for row in 0..batch.num_rows() {
            self.record(id, |w| {
                for (c, (col, f)) in cols.iter().zip(&fields).enumerate() {
                    write_cell(w, c, col.as_ref(), f, row)?;
                }
                Ok(())
            })?;
        }
        Ok(batch.num_rows())
    }

    /// Finishes the message in progress and returns all finished messages.
    pub fn take_messages(&mut self) -> Vec<Vec<u8>> {
        self.finish_message();
        std::mem::take(&mut self.done)
    }
}

fn write_cell(
    w: &mut RecordWriter<'_>,
    c: usize,
    col: &dyn Array,
    f: &FieldSpec,
    row: usize,
) -> Result<(), IpfixError> {
    let null = col.is_null(row);
    match col.data_type() {
        DataType::UInt64 => {
            let v = col.as_primitive::<UInt64Type>().value(row);
            w.unsigned(if null { 0 } else { v })?;
        }
        DataType::Float64 => {
            let v = col.as_primitive::<Float64Type>().value(row);
            w.float(if null { 0.0 } else { v })?;
        }
        DataType::Boolean => {
            w.boolean(!null && col.as_boolean().value(row))?;
        }
        DataType::Timestamp(arrow_schema::TimeUnit::Nanosecond, _) => {
            let ns = if null {
                0
            } else {
                col.as_primitive::<TimestampNanosecondType>().value(row)
            };
            let ntp = f.enterprise.is_none()
                && matches!(
                    f.id,
                    ie::FLOW_START_MICROSECONDS
                        | ie::FLOW_END_MICROSECONDS
                        | ie::FLOW_START_NANOSECONDS
                        | ie::FLOW_END_NANOSECONDS
                );
            match f.length {
                4 => w.time_s(ns)?,
                _ if ntp => w.time_ns(ns)?,
                _ => w.time_ms(ns)?,
            };
        }
        DataType::Utf8 => {
            let s = if null {
                ""
            } else {
                col.as_string::<i32>().value(row)
            };
            match f.length {
                4 | 16 => {
                    let a: IpAddr = if null {
                        if f.length == 4 {
                            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                        } else {
                            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                        }
                    } else {
                        s.parse().map_err(|_| IpfixError::ValueDoesNotFit {
                            index: c,
                            ie: f.id,
                            len: f.length,
                        })?
                    };
                    w.ip(a)?;
                }
                _ => {
                    w.string(s)?;
                }
            }
        }
        _ => return Err(IpfixError::BadColumn(c)),
    }
    Ok(())
}

/// The standard (IANA) field for an mPlane core-registry element, where one
/// exists: addresses, ports, octet/packet/flow counts, start/end times
/// (as dateTimeMilliseconds, which every collector reads).
pub fn iana_field(element: &str) -> Option<FieldSpec> {
    let (id, len) = match element {
        "source.ip4" => (ie::SOURCE_IPV4_ADDRESS, 4),
        "destination.ip4" => (ie::DESTINATION_IPV4_ADDRESS, 4),
        "source.ip6" => (ie::SOURCE_IPV6_ADDRESS, 16),
        "destination.ip6" => (ie::DESTINATION_IPV6_ADDRESS, 16),
        "observer.ip4" => (ie::EXPORTER_IPV4_ADDRESS, 4),
        "observer.ip6" => (ie::EXPORTER_IPV6_ADDRESS, 16),
        "source.port" => (ie::SOURCE_TRANSPORT_PORT, 2),
        "destination.port" => (ie::DESTINATION_TRANSPORT_PORT, 2),
        "octets.ip" => (ie::OCTET_DELTA_COUNT, 8),
        "packets.ip" => (ie::PACKET_DELTA_COUNT, 8),
        "flows" => (ie::DELTA_FLOW_COUNT, 8),
        "start" => (ie::FLOW_START_MILLISECONDS, 8),
        "end" => (ie::FLOW_END_MILLISECONDS, 8),
        _ => return None,
    };
    Some(FieldSpec::iana(id, len))
}

/// A template with one field per column of `schema`, in column order;
/// `map` gives each column's field (e.g. `|c| iana_field(&c.element)`,
/// falling back to enterprise-specific elements of the probe).
pub fn template_for_schema(
    id: u16,
    schema: &ExportSchema,
    map: impl Fn(&Column) -> Option<FieldSpec>,
) -> Result<Template, IpfixError> {
    let fields = schema
        .columns()
        .iter()
        .map(|c| map(c).ok_or_else(|| IpfixError::Unmapped(c.element.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    Template::new(id, fields)
}

/// Sends IPFIX over UDP, resending templates periodically (RFC 7011 §8.4).
#[derive(Debug)]
pub struct UdpExporter {
    sock: UdpSocket,
    /// The encoder (register templates, write records through it).
    pub encoder: Encoder,
    /// How often templates are resent. Default 60 s.
    pub template_interval: Duration,
    last_templates: Option<Instant>,
}

impl UdpExporter {
    /// A UDP socket connected to the collector `to`.
    pub fn connect(to: impl ToSocketAddrs, domain: u32) -> Result<UdpExporter, IpfixError> {
        let addrs: Vec<_> = to.to_socket_addrs()?.collect();
        let first = addrs
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
        let bind = if first.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let sock = UdpSocket::bind(bind)?;
        sock.connect(&addrs[..])?;
        Ok(UdpExporter {
            sock,
            encoder: Encoder::new(domain, DEFAULT_UDP_MESSAGE_LEN),
            template_interval: Duration::from_secs(60),
            last_templates: None,
        })
    }

    /// Sends templates if due, then every finished message; `export_time`
    /// is seconds since the Unix epoch. Returns the messages sent.
    pub fn flush(&mut self, export_time: u32) -> Result<usize, IpfixError> {
        self.encoder.set_export_time(export_time);
        let mut sent = 0;
        let due = self
            .last_templates
            .is_none_or(|t| t.elapsed() >= self.template_interval);
        if due {
            for m in self.encoder.template_messages() {
                self.sock.send(&m)?;
                sent += 1;
            }
            self.last_templates = Some(Instant::now());
        }
        for m in self.encoder.take_messages() {
            self.sock.send(&m)?;
            sent += 1;
        }
        Ok(sent)
    }
}

/// Sends IPFIX over TCP: templates once at the start, then data messages.
#[derive(Debug)]
pub struct TcpExporter {
    stream: TcpStream,
    /// The encoder.
    pub encoder: Encoder,
    templates_sent: bool,
}

impl TcpExporter {
    /// Connects to the collector.
    pub fn connect(to: impl ToSocketAddrs, domain: u32) -> Result<TcpExporter, IpfixError> {
        let stream = TcpStream::connect(to)?;
        stream.set_nodelay(true)?;
        Ok(TcpExporter {
            stream,
            encoder: Encoder::new(domain, usize::from(u16::MAX)),
            templates_sent: false,
        })
    }

    /// Sends the templates (first call only) and the finished messages.
    pub fn flush(&mut self, export_time: u32) -> Result<usize, IpfixError> {
        self.encoder.set_export_time(export_time);
        let mut sent = 0;
        if !self.templates_sent {
            for m in self.encoder.template_messages() {
                self.stream.write_all(&m)?;
                sent += 1;
            }
            self.templates_sent = true;
        }
        for m in self.encoder.take_messages() {
            self.stream.write_all(&m)?;
            sent += 1;
        }
        self.stream.flush()?;
        Ok(sent)
    }
}

/// A decoded IPFIX Message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Export time (s since the Unix epoch).
    pub export_time: u32,
    /// Sequence number.
    pub sequence: u32,
    /// Observation Domain ID.
    pub domain: u32,
    /// Templates defined in this message.
    pub templates: Vec<Template>,
    /// Data records, each as raw field values in template order.
    pub records: Vec<DataRecord>,
}

/// One decoded Data Record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRecord {
    /// Template ID.
    pub template: u16,
    /// Raw value of each field (variable-length prefixes removed).
    pub values: Vec<Vec<u8>>,
}

impl DataRecord {
    /// Field `i` as an unsigned integer (1–8 bytes, big-endian).
    pub fn unsigned(&self, i: usize) -> Option<u64> {
        let v = self.values.get(i)?;
        if v.is_empty() || v.len() > 8 {
            return None;
        }
        Some(v.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)))
    }
}

/// Decodes IPFIX Messages, remembering templates per observation domain.
#[derive(Debug, Default)]
pub struct Decoder {
    templates: HashMap<(u32, u16), Template>,
}

fn be16(b: &[u8], at: usize) -> Result<u16, IpfixError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(IpfixError::Malformed(at))
}

fn be32(b: &[u8], at: usize) -> Result<u32, IpfixError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(IpfixError::Malformed(at))
}

impl Decoder {
    /// A decoder with no templates.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Decodes one message. Data Sets of unknown templates are skipped.
    pub fn decode(&mut self, msg: &[u8]) -> Result<Message, IpfixError> {
        let version = be16(msg, 0)?;
        if version != VERSION {
            return Err(IpfixError::BadVersion(version));
        }
        let len = usize::from(be16(msg, 2)?);
        if len < HEADER_LEN || len > msg.len() {
            return Err(IpfixError::Malformed(2));
        }
        let msg = &msg[..len];
        let mut m = Message {
            export_time: be32(msg, 4)?,
            sequence: be32(msg, 8)?,
            domain: be32(msg, 12)?,
            templates: Vec::new(),
            records: Vec::new(),
        };
        let mut at = HEADER_LEN;
        while at + SET_HEADER_LEN <= len {
            let set_id = be16(msg, at)?;
            let set_len = usize::from(be16(msg, at + 2)?);
            if set_len < SET_HEADER_LEN || at + set_len > len {
                return Err(IpfixError::Malformed(at));
            }
            let body = &msg[at + SET_HEADER_LEN..at + set_len];
            if set_id == TEMPLATE_SET_ID || set_id == OPTIONS_TEMPLATE_SET_ID {
                self.templates_in(
                    body,
                    m.domain,
                    set_id == OPTIONS_TEMPLATE_SET_ID,
                    &mut m.templates,
                )?;
            } else if set_id >= MIN_TEMPLATE_ID
                && let Some(t) = self.templates.get(&(m.domain, set_id))
            {
                records_in(body, t, &mut m.records)?;
            }
            at += set_len;
        }
        if at != len {
            return Err(IpfixError::Malformed(at));
        }
        Ok(m)
    }

    fn templates_in(
        &mut self,
        body: &[u8],
        domain: u32,
        options: bool,
        out: &mut Vec<Template>,
    ) -> Result<(), IpfixError> {
        let mut p = 0;
        let head = if options { 6 } else { 4 };
        // Records until fewer bytes than a template header remain (padding).
        while p + head <= body.len() {
            let id = be16(body, p)?;
            let count = usize::from(be16(body, p + 2)?);
            p += 4;
            if count == 0 {
                // Template withdrawal (TCP).
                self.templates.remove(&(domain, id));
                continue;
            }
            let scope = if options {
                let s = be16(body, p)?;
                p += 2;
                s
            } else {
                0
            };
            let mut fields = Vec::with_capacity(count);
            for _ in 0..count {
                let raw = be16(body, p)?;
                let length = be16(body, p + 2)?;
                p += 4;
                let enterprise = if raw & 0x8000 != 0 {
                    let pen = be32(body, p)?;
                    p += 4;
                    Some(pen)
                } else {
                    None
                };
                fields.push(FieldSpec {
                    id: raw & 0x7fff,
                    length,
                    enterprise,
                });
            }
            let t = if options {
                Template::options(id, scope, fields)?
            } else {
                Template::new(id, fields)?
            };
            self.templates.insert((domain, id), t.clone());
            out.push(t);
        }
        Ok(())
    }
}

fn records_in(body: &[u8], t: &Template, out: &mut Vec<DataRecord>) -> Result<(), IpfixError> {
    let min_len: usize = t
        .fields
        .iter()
        .map(|f| {
            if f.length == VARLEN {
                1
            } else {
                usize::from(f.length)
            }
        })
        .sum();
    let mut p = 0;
    while p + min_len <= body.len() && min_len > 0 {
        let mut values = Vec::with_capacity(t.fields.len());
        for f in &t.fields {
            let n = if f.length == VARLEN {
                let first = *body.get(p).ok_or(IpfixError::Malformed(p))?;
                p += 1;
                if first == 255 {
                    let n = usize::from(be16(body, p)?);
                    p += 2;
                    n
                } else {
                    usize::from(first)
                }
            } else {
                usize::from(f.length)
            };
            let v = body.get(p..p + n).ok_or(IpfixError::Malformed(p))?;
            values.push(v.to_vec());
            p += n;
        }
        out.push(DataRecord {
            template: t.id,
            values,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_templates_round_trip() {
        let mut e = Encoder::new(7, 1400);
        let opt = Template::options(
            310,
            1,
            vec![
                FieldSpec::iana(149, 4),
                FieldSpec::iana(164, 8),
                FieldSpec::iana(166, 8),
            ],
        )
        .unwrap();
        assert!(Template::options(311, 0, vec![FieldSpec::iana(1, 8)]).is_err());
        e.add_template(biflow_template()).unwrap();
        e.add_template(opt.clone()).unwrap();
        let tm = e.template_messages();
        assert_eq!(tm.len(), 2, "a template set and an options template set");
        e.record(310, |w| {
            w.unsigned(7)?.unsigned(12)?.unsigned(3)?;
            Ok(())
        })
        .unwrap();
        let data = e.take_messages();
        let mut d = Decoder::new();
        let mut templates = Vec::new();
        for m in &tm {
            templates.extend(d.decode(m).unwrap().templates);
        }
        assert!(templates.contains(&opt));
        assert_eq!(
            templates
                .iter()
                .find(|t| t.id() == 310)
                .unwrap()
                .scope_fields(),
            1
        );
        let m = d.decode(&data[0]).unwrap();
        assert_eq!(m.records.len(), 1);
        assert_eq!(m.records[0].template, 310);
        assert_eq!(m.records[0].unsigned(1), Some(12));
        assert_eq!(m.records[0].unsigned(2), Some(3));
    }

    fn biflow_template() -> Template {
        let f = FieldSpec::iana;
        Template::new(
            300,
            vec![
                f(ie::SOURCE_IPV4_ADDRESS, 4),
                f(ie::DESTINATION_IPV4_ADDRESS, 4),
                f(ie::SOURCE_TRANSPORT_PORT, 2),
                f(ie::DESTINATION_TRANSPORT_PORT, 2),
                f(ie::PROTOCOL_IDENTIFIER, 1),
                f(ie::FLOW_START_MILLISECONDS, 8),
                f(ie::FLOW_END_NANOSECONDS, 8),
                f(ie::OCTET_DELTA_COUNT, 8),
                f(ie::PACKET_DELTA_COUNT, 4),
                f(ie::OCTET_DELTA_COUNT, 8).reverse(),
                f(ie::PACKET_DELTA_COUNT, 4).reverse(),
                f(1000, VARLEN),
            ],
        )
        .unwrap()
    }

    #[test]
    fn round_trip_with_biflow_and_varlen() {
        let mut e = Encoder::new(7, 512);
        e.add_template(biflow_template()).unwrap();
        e.set_export_time(1_795_573_758);
        let t0 = 1_795_573_758_123_456_789i64;
        for i in 0..40u64 {
            e.record(300, |w| {
                w.ipv4(Ipv4Addr::new(10, 0, 0, i as u8))?
                    .ip(IpAddr::from([192, 0, 2, 1]))?
                    .unsigned(40_000 + i)?
                    .unsigned(443)?
                    .unsigned(6)?
                    .time_ms(t0)?
                    .time_ns(t0)?
                    .unsigned(1500 * i)?
                    .unsigned(i)?
                    .unsigned(99)?
                    .unsigned(2)?
                    .string(if i == 3 { "x" } else { "label" })?;
                Ok(())
            })
            .unwrap();
        }
        let mut msgs = e.template_messages();
        let data = e.take_messages();
        assert!(data.len() > 1, "512-byte messages split the records");
        assert!(data.iter().all(|m| m.len() <= 512));
        msgs.extend(data);
        let mut d = Decoder::new();
        let mut recs = Vec::new();
        let mut seqs = Vec::new();
        for m in &msgs {
            let m = d.decode(m).unwrap();
            assert_eq!(m.domain, 7);
            assert_eq!(m.export_time, 1_795_573_758);
            seqs.push((m.sequence, m.records.len()));
            recs.extend(m.records);
        }
        // Sequence numbers count the records before each message.
        let mut expect = 0;
        for (s, n) in &seqs[1..] {
            assert_eq!(*s as usize, expect);
            expect += n;
        }
        assert_eq!(recs.len(), 40);
        let r = &recs[5];
        assert_eq!(r.values[0], [10, 0, 0, 5]);
        assert_eq!(r.unsigned(2), Some(40_005));
        assert_eq!(r.unsigned(5), Some(1_795_573_758_123));
        let ntp = r.unsigned(6).unwrap();
        assert_eq!(ntp >> 32, 1_795_573_758 + NTP_UNIX_OFFSET);
        let frac_ns = ((ntp & 0xffff_ffff) * 1_000_000_000) >> 32;
        assert!((123_456_788..=123_456_789).contains(&frac_ns), "{frac_ns}");
        assert_eq!(r.unsigned(7), Some(7500));
        assert_eq!(r.unsigned(9), Some(99));
        assert_eq!(r.values[11], b"label");
        assert_eq!(recs[3].values[11], b"x");
        let t = &d.templates[&(7, 300)];
        assert_eq!(t.fields()[9].enterprise, Some(REVERSE_PEN));
        assert_eq!(t, &biflow_template());
    }

    #[test]
    fn misfits_are_errors() {
        let mut e = Encoder::new(1, 1400);
        e.add_template(biflow_template()).unwrap();
        let err = e
            .record(300, |w| {
                w.ipv4(Ipv4Addr::LOCALHOST)?
                    .ipv4(Ipv4Addr::LOCALHOST)?
                    .unsigned(70_000)?; // 2-byte port
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(err, IpfixError::ValueDoesNotFit { index: 2, .. }));
        let err = e
            .record(300, |w| {
                w.ipv4(Ipv4Addr::LOCALHOST)?;
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(err, IpfixError::FieldCount { got: 1, .. }));
        assert!(matches!(
            e.record(999, |_| Ok(())),
            Err(IpfixError::UnknownTemplate(999))
        ));
        assert!(matches!(
            Template::new(255, vec![FieldSpec::iana(1, 8)]),
            Err(IpfixError::BadTemplateId(255))
        ));
        // Nothing half-written was left in the message.
        assert!(e.take_messages().is_empty());
    }

    #[test]
    fn decoder_rejects_garbage() {
        let mut d = Decoder::new();
        assert!(matches!(
            d.decode(&[0, 9, 0, 16]),
            Err(IpfixError::Malformed(_)) | Err(IpfixError::BadVersion(9))
        ));
        let mut m = vec![0u8; 20];
        m[1] = 10;
        m[3] = 20;
        m[16..20].copy_from_slice(&[0, 2, 0, 200]);
        assert!(matches!(d.decode(&m), Err(IpfixError::Malformed(16))));
        assert!(d.decode(&m[..10]).is_err());
    }

    #[test]
    fn udp_round_trip_on_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut x = UdpExporter::connect(rx.local_addr().unwrap(), 42).unwrap();
        x.encoder.add_template(biflow_template()).unwrap();
        x.encoder
            .record(300, |w| {
                w.ipv4(Ipv4Addr::new(1, 2, 3, 4))?
                    .ipv4(Ipv4Addr::new(5, 6, 7, 8))?
                    .unsigned(1)?
                    .unsigned(2)?
                    .unsigned(17)?
                    .time_ms(0)?
                    .time_ns(0)?
                    .unsigned(3)?
                    .unsigned(4)?
                    .unsigned(5)?
                    .unsigned(6)?
                    .bytes(&[0xab; 300])?;
                Ok(())
            })
            .unwrap();
        assert_eq!(x.flush(1).unwrap(), 2);
        let mut d = Decoder::new();
        let mut buf = [0u8; 2048];
        let mut recs = Vec::new();
        for _ in 0..2 {
            let n = rx.recv(&mut buf).unwrap();
            recs.extend(d.decode(&buf[..n]).unwrap().records);
        }
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].values[11].len(), 300, "3-byte varlen prefix");
        // Templates are not resent before the interval.
        x.encoder
            .record(300, |w| {
                w.ipv4(Ipv4Addr::LOCALHOST)?
                    .ipv4(Ipv4Addr::LOCALHOST)?
                    .unsigned(1)?
                    .unsigned(2)?
                    .unsigned(6)?
                    .time_ms(0)?
                    .time_ns(0)?
                    .unsigned(3)?
                    .unsigned(4)?
                    .unsigned(5)?
                    .unsigned(6)?
                    .string("")?;
                Ok(())
            })
            .unwrap();
        assert_eq!(x.flush(2).unwrap(), 1);
        let n = rx.recv(&mut buf).unwrap();
        let m = d.decode(&buf[..n]).unwrap();
        assert_eq!(m.sequence, 1);
        assert_eq!(m.records.len(), 1);
    }

    #[test]
    fn tcp_sends_templates_once() {
        use std::io::Read;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            all
        });
        let mut x = TcpExporter::connect(addr, 9).unwrap();
        x.encoder
            .add_template(
                Template::new(400, vec![FieldSpec::iana(ie::OCTET_DELTA_COUNT, 8)]).unwrap(),
            )
            .unwrap();
        for round in 0..3u64 {
            for i in 0..10 {
                x.encoder
                    .record(400, |w| w.unsigned(round * 10 + i).map(|_| ()))
                    .unwrap();
            }
            x.flush(100).unwrap();
        }
        drop(x);
        let stream = reader.join().unwrap();
        let mut d = Decoder::new();
        let (mut at, mut templates, mut values) = (0, 0, Vec::new());
        while at < stream.len() {
            let len = usize::from(u16::from_be_bytes([stream[at + 2], stream[at + 3]]));
            let m = d.decode(&stream[at..at + len]).unwrap();
            templates += m.templates.len();
            values.extend(m.records.iter().map(|r| r.unsigned(0).unwrap()));
            at += len;
        }
        assert_eq!(templates, 1);
        assert_eq!(values, (0..30).collect::<Vec<u64>>());
    }

    #[test]
    fn record_batch_to_ipfix() {
        use crate::ColumnsBuilder;
        use mplane::registry::Registries;
        use std::sync::Arc;
        let core = Registries::core();
        let schema = Arc::new(
            ExportSchema::from_registry(
                &core,
                &[
                    "start",
                    "source.ip4",
                    "destination.ip6",
                    "source.port",
                    "octets.ip",
                ],
            )
            .unwrap(),
        );
        let t = template_for_schema(500, &schema, |c| iana_field(&c.element)).unwrap();
        let mut b = ColumnsBuilder::new(schema.clone(), 4);
        b.append_time_ns(0, 1_795_573_758_123_456_789).unwrap();
        b.append_addr(1, IpAddr::from([10, 1, 2, 3])).unwrap();
        b.append_addr(2, "2001:db8::7".parse().unwrap()).unwrap();
        b.append_u64(3, 443).unwrap();
        b.append_u64(4, 1 << 40).unwrap();
        for c in 0..5 {
            b.append_null(c).unwrap();
        }
        let batch = b.finish().unwrap();
        let mut e = Encoder::new(3, 1400);
        e.add_template(t).unwrap();
        assert_eq!(e.batch(500, &batch).unwrap(), 2);
        let mut d = Decoder::new();
        let mut recs = Vec::new();
        for m in e.template_messages().into_iter().chain(e.take_messages()) {
            recs.extend(d.decode(&m).unwrap().records);
        }
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].unsigned(0), Some(1_795_573_758_123));
        assert_eq!(recs[0].values[1], [10, 1, 2, 3]);
        assert_eq!(
            recs[0].values[2],
            "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(recs[0].unsigned(3), Some(443));
        assert_eq!(recs[0].unsigned(4), Some(1 << 40));
        assert_eq!(recs[1].values[1], [0; 4], "null address is 0.0.0.0");
        assert_eq!(recs[1].unsigned(4), Some(0));
        assert!(matches!(
            template_for_schema(501, &schema, |_| None),
            Err(IpfixError::Unmapped(_))
        ));
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        /// A field: length class (0 = varlen, else 1/2/4/8 bytes) and values.
        fn field() -> impl Strategy<Value = u16> {
            prop_oneof![Just(1u16), Just(2), Just(4), Just(8), Just(VARLEN)]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn encode_decode_round_trip(
                lens in proptest::collection::vec(field(), 1..12),
                rows in proptest::collection::vec(
                    proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)), 12),
                    0..60,
                ),
                max_len in 700usize..4000,
                reverse in any::<bool>(),
            ) {
                let fields: Vec<FieldSpec> = lens
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| {
                        let f = FieldSpec::iana(1 + i as u16, l);
                        if reverse && i % 2 == 1 { f.reverse() } else { f }
                    })
                    .collect();
                let t = Template::new(256, fields.clone()).unwrap();
                let mut e = Encoder::new(5, max_len);
                e.add_template(t.clone()).unwrap();
                let mut expected = Vec::new();
                for row in &rows {
                    let mut vals = Vec::new();
                    let r = e.record(256, |w| {
                        for (f, (n, b)) in fields.iter().zip(row) {
                            if f.length == VARLEN {
                                w.bytes(b)?;
                                vals.push(b.clone());
                            } else {
                                let bits = 8 * u32::from(f.length);
                                let v = if bits == 64 { *n } else { n & ((1u64 << bits) - 1) };
                                w.unsigned(v)?;
                                vals.push(v.to_be_bytes()[8 - usize::from(f.length)..].to_vec());
                            }
                        }
                        Ok(())
                    });
                    match r {
                        Ok(()) => expected.push(vals),
                        Err(IpfixError::RecordTooLarge(n)) => {
                            prop_assert!(n + HEADER_LEN + SET_HEADER_LEN > max_len)
                        }
                        Err(other) => prop_assert!(false, "{other}"),
                    }
                }
                let mut d = Decoder::new();
                let mut got = Vec::new();
                let mut seq = 0u32;
                for m in e.template_messages() {
                    let m = d.decode(&m).unwrap();
                    prop_assert_eq!(&m.templates, &vec![t.clone()]);
                }
                for m in e.take_messages() {
                    prop_assert!(m.len() <= max_len);
                    let m = d.decode(&m).unwrap();
                    prop_assert_eq!(m.sequence, seq);
                    seq += m.records.len() as u32;
                    got.extend(m.records.into_iter().map(|r| r.values));
                }
                prop_assert_eq!(got, expected);
            }

            #[test]
            fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
                let mut d = Decoder::new();
                let mut m = bytes.clone();
                if m.len() >= 4 {
                    m[0] = 0;
                    m[1] = 10;
                    let n = m.len() as u16;
                    m[2..4].copy_from_slice(&n.to_be_bytes());
                }
                let _ = d.decode(&m);
                let _ = d.decode(&bytes);
            }
        }
    }
}

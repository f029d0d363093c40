use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::compression::{compress, decompress};
use super::*;

fn build(codec: Compression, records: &[Record]) -> Bytes {
    let mut b = RecordBatchBuilder::new(codec).producer(7, 3, 42);
    for r in records {
        b.push(r).unwrap();
    }
    b.build().unwrap()
}

fn decode(bytes: Bytes) -> Vec<DecodedRecord> {
    RecordBatch::new(bytes, usize::MAX).unwrap().records().unwrap().collect::<Result<Vec<_>, _>>().unwrap()
}

/// Assembles a batch around an arbitrary payload, for inputs the builder
/// would never produce (raw snappy, lying counts).
fn assemble(codec: Compression, payload: &[u8], count: i32) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i64(0);
    buf.put_i32((layout::HEADER_SIZE - 12 + payload.len()) as i32);
    buf.put_i32(-1);
    buf.put_i8(2);
    buf.put_u32(0);
    buf.put_i16(i16::from(codec.id()));
    buf.put_i32(count - 1);
    buf.put_i64(1000);
    buf.put_i64(1000);
    buf.put_i64(-1);
    buf.put_i16(-1);
    buf.put_i32(-1);
    buf.put_i32(count);
    buf.put_slice(payload);
    let crc = crc32c::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    buf.to_vec()
}

#[test]
fn crc32c_is_castagnoli() {
    // The check value of CRC-32C; plain CRC-32 would give 0xCBF43926.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn kafka_byte_layout_test_vector() {
    let mut b = RecordBatchBuilder::new(Compression::None)
        .base_offset(0x0102_0304_0506_0708)
        .partition_leader_epoch(9)
        .producer(0x1122_3344_5566_7788, 0x99, 0x0a0b_0c0d);
    b.append(1_700_000_000_000, None, Some(Bytes::from_static(b"v"))).unwrap();
    let bytes = b.build().unwrap();
    let crc = crc32c::crc32c(&bytes[21..]);
    let mut expected = vec![
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // 0 baseOffset
        0x00, 0x00, 0x00, 57, // 8 batchLength = 69 - 12
        0x00, 0x00, 0x00, 0x09, // 12 partitionLeaderEpoch
        0x02, // 16 magic
    ];
    expected.extend_from_slice(&crc.to_be_bytes()); // 17 crc
    expected.extend_from_slice(&[0x00, 0x00]); // 21 attributes
    expected.extend_from_slice(&[0, 0, 0, 0]); // 23 lastOffsetDelta
    expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // 27 baseTimestamp
    expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes()); // 35 maxTimestamp
    expected.extend_from_slice(&0x1122_3344_5566_7788i64.to_be_bytes()); // 43 producerId
    expected.extend_from_slice(&[0x00, 0x99]); // 51 producerEpoch
    expected.extend_from_slice(&[0x0a, 0x0b, 0x0c, 0x0d]); // 53 baseSequence
    expected.extend_from_slice(&[0, 0, 0, 1]); // 57 recordsCount
    assert_eq!(expected.len(), 61);
    // 61: length 7 (zigzag 0x0e), attributes, tsDelta 0, offsetDelta 0,
    // key -1 (zigzag 0x01), value len 1 (zigzag 0x02), 'v', 0 headers.
    expected.extend_from_slice(&[0x0e, 0x00, 0x00, 0x00, 0x01, 0x02, b'v', 0x00]);
    assert_eq!(&bytes[..], &expected[..]);

    let h = validate(&bytes, 1 << 20).unwrap();
    assert_eq!(h.size(), 69);
    assert_eq!(h.records_count, 1);
    assert_eq!(h.crc, crc);
    assert_eq!(h.producer_epoch, 0x99);

    // Attributes at 21 carry the codec.
    let z = build(Compression::Zstd, &[Record::new(5, None, None)]);
    assert_eq!(&z[21..23], &[0, 4]);
    assert_eq!(&z[57..61], &[0, 0, 0, 1]);
}

#[test]
fn every_codec_round_trips() {
    let records: Vec<Record> = (0..200)
        .map(|i| Record {
            timestamp: 1000 + i * 3,
            key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
            value: (i % 7 != 0).then(|| Bytes::from(vec![i as u8; (i as usize) * 10])),
            headers: vec![RecordHeader {
                key: format!("h{i}"),
                value: (i % 2 == 0).then(|| Bytes::from_static(b"hv")),
            }],
        })
        .collect();
    for codec in Compression::ALL {
        let bytes = build(codec, &records);
        let h = validate(&bytes, usize::MAX).unwrap();
        assert_eq!(h.compression().unwrap(), codec);
        assert_eq!(h.records_count, 200);
        assert_eq!(h.last_offset_delta, 199);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.max_timestamp, 1000 + 199 * 3);
        assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (7, 3, 42));
        let decoded = decode(bytes);
        assert_eq!(decoded.len(), records.len());
        for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
            assert_eq!(d.offset, i as i64);
            assert_eq!(d.timestamp, r.timestamp);
            assert_eq!(d.key, r.key);
            assert_eq!(d.value, r.value);
            assert_eq!(d.headers, r.headers);
        }
    }
}

#[test]
fn snappy_writes_xerial_and_reads_raw_too() {
    let data = vec![7u8; 100_000];
    let framed = compress(Compression::Snappy, &data).unwrap();
    assert_eq!(&framed[..8], b"\x82SNAPPY\0");
    assert_eq!(&framed[8..16], &[0, 0, 0, 1, 0, 0, 0, 1]);
    assert_eq!(decompress(Compression::Snappy, &framed, 1 << 20).unwrap(), data);

    // A batch whose payload is one raw snappy block, as librdkafka can send.
    let mut b = RecordBatchBuilder::new(Compression::None);
    b.append(1, Some(Bytes::from_static(b"k")), Some(Bytes::from_static(b"raw"))).unwrap();
    let plain = b.build().unwrap();
    let raw = snap::raw::Encoder::new().compress_vec(&plain[layout::HEADER_SIZE..]).unwrap();
    let batch = assemble(Compression::Snappy, &raw, 1);
    let decoded = decode(Bytes::from(batch));
    assert_eq!(decoded[0].value.as_deref(), Some(&b"raw"[..]));
}

#[test]
fn decompression_is_capped() {
    let records: Vec<Record> = (0..64).map(|_| Record::new(0, None, Some(Bytes::from(vec![0u8; 64 * 1024])))).collect();
    // Uncompressed records are already in memory at their real size, so
    // only real codecs are capped.
    for codec in &Compression::ALL[1..] {
        let batch = RecordBatch::new(build(*codec, &records), usize::MAX).unwrap();
        let err = batch.records_with_limit(1 << 20).map(|_| ()).unwrap_err();
        assert_eq!(err, BatchError::DecompressedTooLarge { limit: 1 << 20 }, "{codec:?}");
        assert_eq!(batch.records_with_limit(8 << 20).unwrap().count(), 64);
    }
}

#[test]
fn typed_errors_for_bad_batches() {
    let good = build(Compression::None, &[Record::new(1, None, Some(Bytes::from_static(b"x")))]);
    let size = good.len();

    let mut bad_crc = good.to_vec();
    *bad_crc.last_mut().unwrap() ^= 0xff;
    assert!(matches!(validate(&bad_crc, usize::MAX), Err(BatchError::CrcMismatch { .. })));

    let mut bad_magic = good.to_vec();
    bad_magic[16] = 1;
    assert_eq!(validate(&bad_magic, usize::MAX), Err(BatchError::BadMagic(1)));

    assert!(matches!(validate(&good[..size - 1], usize::MAX), Err(BatchError::Truncated { .. })));
    assert!(matches!(validate(&good[..30], usize::MAX), Err(BatchError::Truncated { .. })));
    assert!(matches!(validate(&good[..5], usize::MAX), Err(BatchError::Truncated { .. })));
    assert_eq!(validate(&good, size - 1), Err(BatchError::TooLarge { size, max: size - 1 }));

    let mut bad_len = good.to_vec();
    bad_len[8..12].copy_from_slice(&10i32.to_be_bytes());
    assert_eq!(validate(&bad_len, usize::MAX), Err(BatchError::InvalidLength(10)));

    // Counts that disagree with lastOffsetDelta, with a correct CRC.
    let mut payload = good[layout::HEADER_SIZE..].to_vec();
    let lying = assemble(Compression::None, &payload, 2);
    assert!(matches!(validate(&lying, usize::MAX), Err(BatchError::InvalidRecordCount { .. })));
    let zero = assemble(Compression::None, &payload, 0);
    assert!(matches!(validate(&zero, usize::MAX), Err(BatchError::InvalidRecordCount { .. })));

    // Unknown codec 6.
    let mut codec6 = assemble(Compression::None, &payload, 1);
    codec6[22] = 6;
    let crc = crc32c::crc32c(&codec6[21..]);
    codec6[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(validate(&codec6, usize::MAX), Err(BatchError::UnknownCompression(6)));

    // Valid header, trailing junk inside the records section.
    payload.push(0);
    let trailing = assemble(Compression::None, &payload, 1);
    let batch = RecordBatch::new(Bytes::from(trailing), usize::MAX).unwrap();
    let results: Vec<_> = batch.records().unwrap().collect();
    assert!(results[0].is_ok());
    assert!(results[1].is_err());
    assert_eq!(results.len(), 2);

    assert_eq!(RecordBatchBuilder::new(Compression::None).build(), Err(BatchError::Empty));
}

#[test]
fn in_place_setters() {
    let records: Vec<Record> = (0..5).map(|i| Record::new(100 + i, None, None)).collect();
    for codec in Compression::ALL {
        let mut bytes = build(codec, &records).to_vec();
        let crc_before = validate(&bytes, usize::MAX).unwrap().crc;
        set_base_offset(&mut bytes, 1000).unwrap();
        set_partition_leader_epoch(&mut bytes, 77).unwrap();
        let h = validate(&bytes, usize::MAX).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch, h.crc), (1000, 77, crc_before));
        let offsets: Vec<i64> = decode(Bytes::from(bytes.clone())).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![1000, 1001, 1002, 1003, 1004]);

        set_log_append_time(&mut bytes, 9999).unwrap();
        let h = validate(&bytes, usize::MAX).unwrap();
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(h.max_timestamp, 9999);
        assert_eq!(h.compression().unwrap(), codec);
        assert!(decode(Bytes::from(bytes)).iter().all(|r| r.timestamp == 9999));
    }
    assert!(set_base_offset(&mut [0u8; 10], 1).is_err());
}

#[test]
fn producer_state_is_rewritten_with_a_fresh_crc() {
    let records: Vec<Record> = (0..4).map(|i| Record::new(100 + i, Some(Bytes::from(format!("k{i}"))), None)).collect();
    for codec in Compression::ALL {
        // `build` stamps (7, 3, 42); re-stamping must give exactly what the
        // builder gives for the new identity.
        let mut bytes = build(codec, &records).to_vec();
        set_producer_state(&mut bytes, 9001, 12, 500).unwrap();
        let mut fresh = RecordBatchBuilder::new(codec).producer(9001, 12, 500);
        for r in &records {
            fresh.push(r).unwrap();
        }
        assert_eq!(bytes, fresh.build().unwrap().to_vec(), "{codec:?}");
        let h = validate(&bytes, usize::MAX).unwrap();
        assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (9001, 12, 500));
        let keys: Vec<_> = decode(Bytes::from(bytes.clone())).into_iter().filter_map(|r| r.key).collect();
        assert_eq!(keys, ["k0", "k1", "k2", "k3"]);

        // And back to "not idempotent".
        set_producer_state(&mut bytes, NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE).unwrap();
        let h = validate(&bytes, usize::MAX).unwrap();
        assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (-1, -1, -1));
    }
    // A batch shorter than its length field says is refused, untouched.
    let whole = build(Compression::None, &records).to_vec();
    let mut cut = whole[..whole.len() - 1].to_vec();
    assert!(matches!(set_producer_state(&mut cut, 1, 1, 1), Err(BatchError::Truncated { .. })));
    assert_eq!(cut, whole[..whole.len() - 1]);
    assert!(set_producer_state(&mut [0u8; 10], 1, 1, 1).is_err());
}

#[test]
fn batch_iterator_splits_and_reports_partial_tail() {
    let a = build(Compression::None, &[Record::new(1, None, None)]);
    let b = build(Compression::Lz4, &[Record::new(2, None, None)]);
    let mut all = BytesMut::new();
    all.put_slice(&a);
    all.put_slice(&b);
    all.put_slice(&a[..20]);
    let got: Vec<_> = batches(all.freeze(), usize::MAX).collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].as_ref().unwrap().as_bytes(), &a);
    assert_eq!(got[1].as_ref().unwrap().as_bytes(), &b);
    assert!(matches!(got[2], Err(BatchError::Truncated { .. })));
}

#[test]
fn varints_match_kafka() {
    use super::varint::*;
    for (v, enc) in [
        (0i32, vec![0x00]),
        (-1, vec![0x01]),
        (1, vec![0x02]),
        (63, vec![0x7e]),
        (-64, vec![0x7f]),
        (64, vec![0x80, 0x01]),
        (i32::MAX, vec![0xfe, 0xff, 0xff, 0xff, 0x0f]),
        (i32::MIN, vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
    ] {
        let mut out = Vec::new();
        put_varint(&mut out, v);
        assert_eq!(out, enc, "{v}");
        assert_eq!(varint_len(v), enc.len());
        let mut pos = 0;
        assert_eq!(get_varint(&out, &mut pos).unwrap(), v);
    }
    let mut pos = 0;
    assert!(get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut pos).is_err());
}

fn arb_bytes() -> impl Strategy<Value = Option<Bytes>> {
    prop::option::of(prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from))
}

fn arb_record() -> impl Strategy<Value = Record> {
    (any::<i64>(), arb_bytes(), arb_bytes(), prop::collection::vec(("[a-z]{0,8}", arb_bytes()), 0..3)).prop_map(
        |(timestamp, key, value, headers)| Record {
            timestamp,
            key,
            value,
            headers: headers.into_iter().map(|(key, value)| RecordHeader { key, value }).collect(),
        },
    )
}

fn arb_codec() -> impl Strategy<Value = Compression> {
    prop::sample::select(Compression::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn round_trip(codec in arb_codec(), records in prop::collection::vec(arb_record(), 1..20), base in 0i64..1 << 40) {
        let mut b = RecordBatchBuilder::new(codec).base_offset(base);
        for r in &records {
            b.push(r).unwrap();
        }
        prop_assert_eq!(b.estimated_size() >= layout::HEADER_SIZE, true);
        let bytes = b.build().unwrap();
        if codec == Compression::None {
            prop_assert_eq!(bytes.len(), b.estimated_size());
        }
        let h = validate(&bytes, usize::MAX).unwrap();
        prop_assert_eq!(h.base_offset, base);
        prop_assert_eq!(h.max_timestamp, records.iter().map(|r| r.timestamp).max().unwrap());
        let decoded = decode(bytes);
        prop_assert_eq!(decoded.len(), records.len());
        for (i, (d, r)) in decoded.iter().zip(&records).enumerate() {
            prop_assert_eq!(d.offset, base + i as i64);
            prop_assert_eq!(d.timestamp, r.timestamp);
            prop_assert_eq!(&d.key, &r.key);
            prop_assert_eq!(&d.value, &r.value);
            prop_assert_eq!(&d.headers, &r.headers);
        }
    }

    #[test]
    fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = validate(&data, usize::MAX);
        let _ = BatchHeader::parse(&data);
        for codec in Compression::ALL {
            let _ = decompress(codec, &data, 1 << 16);
        }
        let mut copy = data.clone();
        let _ = set_log_append_time(&mut copy, 1);
        let _ = batches(Bytes::from(data), usize::MAX).count();
    }

    #[test]
    fn corrupted_batches_never_panic(
        codec in arb_codec(),
        records in prop::collection::vec(arb_record(), 1..5),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut b = RecordBatchBuilder::new(codec);
        for r in &records {
            b.push(r).unwrap();
        }
        let mut bytes = b.build().unwrap().to_vec();
        for (i, x) in &flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x | 1;
        }
        // Decoding with a corrupt payload but a recomputed CRC must still end
        // in a value, never a panic.
        if bytes.len() >= layout::HEADER_SIZE {
            let end = bytes.len();
            let crc = crc32c::crc32c(&bytes[21..end]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        if let Ok(batch) = RecordBatch::new(Bytes::from(bytes), usize::MAX)
            && let Ok(iter) = batch.records_with_limit(1 << 20) {
                let _ = iter.count();
            }
    }
}

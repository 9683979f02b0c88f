//! How fast exports become people: 100,000 rows of a `Get-ADUser | Export-Csv` export and
//! 100,000 entries of an `ldifde` export, each beside the cost of merely tokenising the same
//! bytes, so a regression in our per-record work stands out from the parser's own.
//!
//! `cargo bench -p rollcall-file`

use std::hint::black_box;

use base64::Engine as _;
use chrono::Utc;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PEOPLE: usize = 100_000;

fn powershell_csv() -> Vec<u8> {
    let mut csv = String::from(
        "#TYPE Selected.Microsoft.ActiveDirectory.Management.ADUser\r\n\
         \"DistinguishedName\",\"Enabled\",\"GivenName\",\"Name\",\"ObjectClass\",\"ObjectGUID\",\
         \"SamAccountName\",\"SID\",\"Surname\",\"UserPrincipalName\",\"DisplayName\",\"EmailAddress\",\
         \"Department\",\"Title\",\"MemberOf\",\"userAccountControl\",\"accountExpires\"\r\n",
    );
    for i in 0..PEOPLE {
        let groups = if i % 3 == 0 {
            "CN=Staff,OU=Groups,DC=acme,DC=local".to_owned()
        } else {
            "CN=Staff,OU=Groups,DC=acme,DC=local;CN=M365 Users,OU=Groups,DC=acme,DC=local"
                .to_owned()
        };
        csv.push_str(&format!(
            "\"CN=User {i},OU=Staff,DC=acme,DC=local\",\"{enabled}\",\"Given{i}\",\"User {i}\",\"user\",\
             \"{i:08x}-0000-4000-8000-{i:012x}\",\"user{i}\",\"S-1-5-21-1-2-3-{i}\",\"Surname{i}\",\
             \"user{i}@acme.example\",\"User {i}\",\"user{i}@acme.example\",\"Dept {d}\",\"Engineer\",\
             \"{groups}\",\"{uac}\",\"9223372036854775807\"\r\n",
            enabled = if i % 20 == 0 { "False" } else { "True" },
            d = i % 17,
            uac = if i % 20 == 0 { 514 } else { 512 },
        ));
    }
    csv.into_bytes()
}

fn ldifde_export() -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut ldif = String::new();
    for i in 0..PEOPLE {
        let mut guid = [0u8; 16];
        guid[..8].copy_from_slice(&(i as u64).to_le_bytes());
        ldif.push_str(&format!(
            "\ndn: CN=User {i},OU=Staff,DC=acme,DC=local\nchangetype: add\nobjectClass: top\n\
             objectClass: person\nobjectClass: organizationalPerson\nobjectClass: user\n\
             cn: User {i}\nsn: Surname{i}\ngivenName: Given{i}\ndisplayName: User {i}\n\
             memberOf: CN=Staff,OU=Groups,DC=acme,DC=local\nmemberOf: CN=M365 Users,OU=Groups,DC=ac\n me,DC=local\n\
             department: Dept {d}\ntitle: Engineer\nuserAccountControl: 512\n\
             objectGUID:: {guid}\naccountExpires: 9223372036854775807\nsAMAccountName: user{i}\n\
             userPrincipalName: user{i}@acme.example\nmail: user{i}@acme.example\n\
             whenCreated: 20240101120000.0Z\n",
            d = i % 17,
            guid = b64.encode(guid),
        ));
    }
    ldif.into_bytes()
}

fn csv_100k(c: &mut Criterion) {
    let bytes = powershell_csv();
    let now = Utc::now();
    let mut g = c.benchmark_group("100k people from a PowerShell CSV export");
    g.sample_size(10)
        .throughput(Throughput::Elements(PEOPLE as u64));
    g.bench_function("baseline: csv crate, raw records", |b| {
        b.iter(|| {
            let mut r = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(bytes.as_slice());
            let mut rec = csv::ByteRecord::new();
            let mut n = 0;
            while r.read_byte_record(&mut rec).unwrap_or(false) {
                n += rec.len();
            }
            black_box(n)
        })
    });
    g.bench_function("parse_csv", |b| {
        b.iter(|| {
            let read = rollcall_file::parse_csv(&bytes, "bench.csv", now);
            black_box(read.map(|r| r.people.len()).unwrap_or_default())
        })
    });
    g.finish();
}

fn ldif_100k(c: &mut Criterion) {
    let bytes = ldifde_export();
    let now = Utc::now();
    let mut g = c.benchmark_group("100k people from an ldifde export");
    g.sample_size(10)
        .throughput(Throughput::Elements(PEOPLE as u64));
    g.bench_function("baseline: split into lines", |b| {
        b.iter(|| {
            black_box(
                bytes
                    .split(|&b| b == b'\n')
                    .filter(|l| l.is_empty())
                    .count(),
            )
        })
    });
    g.bench_function("parse_ldif", |b| {
        b.iter(|| {
            let read = rollcall_file::parse_ldif(&bytes, "bench.ldf", now);
            black_box(read.map(|r| r.people.len()).unwrap_or_default())
        })
    });
    g.finish();
}

criterion_group!(benches, csv_100k, ldif_100k);
criterion_main!(benches);

//! A throw-away test PKI made with the `openssl` command line tool, with the DN layout of
//! the reference demo PKI (`DC=org, DC=mplane, O=SSB, OU=<kind>, CN=<name>`). Certificate
//! files are written as `openssl x509 -text` dump followed by the PEM block, as the
//! reference's make-pki.sh does.
//!
//! Files in [`Pki::dir`]:
//! * `ca.crt`/`ca.key` — root CA `/DC=org/DC=mplane/OU=Root-CA/CN=Root-CA-1` (EC P-256).
//! * `component`, `component2`, `client`, `supervisor` — leaves of that CA, `.crt` + `.key`
//!   (component: RSA key in PKCS#1; client: EC key in SEC1; others PKCS#8).
//! * `multi` — a client whose last RDN is multi-valued (`CN=Client-1+UID=u1`).
//! * `expired` — client DN, valid 2020-01-01 .. 2021-01-01.
//! * `revoked` — client DN, revoked in `crl.pem`.
//! * `other-ca.crt` and `other` — an unrelated CA and a client leaf from it (same DN).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use mplane::config::TlsFiles;

/// A generated PKI; the directory is deleted on drop.
pub struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("the tests need the `openssl` command line tool: {e}"));
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn leaf_ext(cn: &str) -> String {
    format!(
        "basicConstraints=critical,CA:false\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth,clientAuth\n\
         subjectKeyIdentifier=hash\n\
         authorityKeyIdentifier=keyid\n\
         subjectAltName=DNS:localhost,DNS:{cn}.SSB.mplane.org,IP:127.0.0.1,IP:::1\n"
    )
}

impl Pki {
    /// Generates the whole PKI (about a second).
    pub fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        let d = pki.dir.path();
        pki.ca("ca", "/DC=org/DC=mplane/OU=Root-CA/CN=Root-CA-1");
        pki.ca("other-ca", "/DC=org/DC=mplane/OU=Root-CA/CN=Other-CA");
        pki.leaf(
            "component",
            "ca",
            "/DC=org/DC=mplane/O=SSB/OU=Components/CN=Component-1",
            &["-newkey", "rsa:2048"],
        );
        pki.leaf(
            "component2",
            "ca",
            "/DC=org/DC=mplane/O=SSB/OU=Components/CN=Component-2",
            &EC,
        );
        pki.leaf(
            "client",
            "ca",
            "/DC=org/DC=mplane/O=SSB/OU=Clients/CN=Client-1",
            &EC,
        );
        pki.leaf(
            "supervisor",
            "ca",
            "/DC=org/DC=mplane/O=SSB/OU=Supervisors/CN=Supervisor-1",
            &EC,
        );
        pki.leaf(
            "other",
            "other-ca",
            "/DC=org/DC=mplane/O=SSB/OU=Clients/CN=Client-1",
            &EC,
        );
        pki.leaf(
            "multi",
            "ca",
            "/DC=org/DC=mplane/O=SSB/OU=Clients/CN=Client-1+UID=u1",
            &["-multivalue-rdn", EC[0], EC[1], EC[2], EC[3]],
        );
        // Key formats: PKCS#1 for the RSA component key, SEC1 for the client's EC key.
        openssl(
            d,
            &[
                "rsa",
                "-in",
                "component.key",
                "-traditional",
                "-out",
                "k.tmp",
            ],
        );
        std::fs::rename(d.join("k.tmp"), d.join("component.key")).unwrap();
        openssl(d, &["ec", "-in", "client.key", "-out", "k.tmp"]);
        std::fs::rename(d.join("k.tmp"), d.join("client.key")).unwrap();

        // `openssl ca` for explicit validity dates and revocation.
        for (f, text) in [
            ("index.txt", ""),
            ("serial", "1000\n"),
            ("crlnumber", "1000\n"),
        ] {
            std::fs::write(d.join(f), text).unwrap();
        }
        std::fs::create_dir(d.join("newcerts")).unwrap();
        std::fs::write(
            d.join("ca.cnf"),
            "[ca]\ndefault_ca = ca_default\n[ca_default]\ndir = .\ndatabase = index.txt\n\
             new_certs_dir = newcerts\nserial = serial\ncrlnumber = crlnumber\n\
             certificate = ca.pem\nprivate_key = ca.key\ndefault_md = sha256\n\
             default_days = 365\ndefault_crl_days = 30\npolicy = pol\nunique_subject = no\n\
             crl_extensions = crl_ext\n[pol]\ncommonName = supplied\n\
             [crl_ext]\nauthorityKeyIdentifier = keyid:always\n",
        )
        .unwrap();
        let subj = "/DC=org/DC=mplane/O=SSB/OU=Clients/CN=Client-1";
        pki.ca_signed(
            "expired",
            subj,
            &[
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20210101000000Z",
            ],
        );
        pki.ca_signed("revoked", subj, &["-days", "30"]);
        openssl(d, &["ca", "-config", "ca.cnf", "-revoke", "revoked.pem"]);
        openssl(
            d,
            &["ca", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem"],
        );
        pki
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `[TLS]` section of a component configuration (`mpcom`, the reference's `mpcom`)
    /// with the component's certificate and key and the CA, and a blank line after it.
    pub fn tls_section(&self) -> String {
        let d = self.dir().display();
        format!(
            "[TLS]\ncert = {d}/component.crt\nkey = {d}/component.key\nca-chain = {d}/ca.crt\n\n"
        )
    }

    /// A file of the PKI.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `[TLS]` files for a leaf (`<name>.crt`, `<name>.key`, `ca.crt`, no CRL).
    pub fn files(&self, name: &str) -> TlsFiles {
        TlsFiles {
            cert: self.path(&format!("{name}.crt")),
            key: self.path(&format!("{name}.key")),
            ca_chain: self.path("ca.crt"),
            crl: None,
        }
    }

    /// Writes `<name>.crt` as text dump + PEM from `<name>.pem`.
    fn dump(&self, name: &str) {
        let d = self.dir();
        let text = Command::new("openssl")
            .args(["x509", "-in", &format!("{name}.pem"), "-noout", "-text"])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(text.status.success());
        let pem = std::fs::read(d.join(format!("{name}.pem"))).unwrap();
        let mut all = text.stdout;
        all.extend_from_slice(&pem);
        std::fs::write(d.join(format!("{name}.crt")), all).unwrap();
    }

    fn ca(&self, name: &str, subj: &str) {
        let key = format!("{name}.key");
        let pem = format!("{name}.pem");
        let mut args = vec![
            "req", "-x509", "-nodes", "-sha256", "-days", "3650", "-subj", subj,
        ];
        args.extend(EC);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &pem,
            "-addext",
            "basicConstraints=critical,CA:true",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
        ]);
        openssl(self.dir(), &args);
        self.dump(name);
    }

    fn csr(&self, name: &str, subj: &str, keyopts: &[&str]) {
        let ext = leaf_ext(name);
        std::fs::write(self.path(&format!("{name}.ext")), ext).unwrap();
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let mut args = vec!["req", "-new", "-nodes", "-sha256", "-subj", subj];
        args.extend(keyopts);
        args.extend(["-keyout", &key, "-out", &csr]);
        openssl(self.dir(), &args);
    }

    fn leaf(&self, name: &str, ca: &str, subj: &str, keyopts: &[&str]) {
        self.csr(name, subj, keyopts);
        let (csr, ext, pem) = (
            format!("{name}.csr"),
            format!("{name}.ext"),
            format!("{name}.pem"),
        );
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        openssl(
            self.dir(),
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "825",
                "-sha256",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
        self.dump(name);
    }

    fn ca_signed(&self, name: &str, subj: &str, validity: &[&str]) {
        self.csr(name, subj, &EC);
        let (csr, ext, pem) = (
            format!("{name}.csr"),
            format!("{name}.ext"),
            format!("{name}.pem"),
        );
        let mut args = vec![
            "ca",
            "-batch",
            "-notext",
            "-preserveDN",
            "-config",
            "ca.cnf",
            "-in",
            &csr,
            "-out",
            &pem,
            "-extfile",
            &ext,
        ];
        args.extend(validity);
        openssl(self.dir(), &args);
        self.dump(name);
    }
}

#!/usr/bin/env bash
# A test-only AMD-like chain: ARK → ASK → two VCEKs (chips A and B), shaped like AMD's (RSA-PSS
# SHA-384 with 48-byte salt for ARK/ASK, ECDSA P-384 VCEKs with AMD's TCB and HW_ID extensions).
# Trusted only where a test configures `Roots::only("milan", ark.pem)`; no production binary
# knows it. The outputs are checked in; rerun only to change them (`bash generate.sh`).
set -euo pipefail
cd "$(dirname "$0")"
pss=(-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:48 -sha384)
subj() { echo "/OU=Engineering/C=US/L=Santa Clara/ST=CA/O=Phantom Test (not AMD)/CN=$1"; }

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ark.key 2>/dev/null
openssl req -new -x509 -key ark.key -subj "$(subj ARK-Milan)" -days 9000 "${pss[@]}" \
  -addext basicConstraints=critical,CA:true -out ark.pem
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ask.key 2>/dev/null
openssl req -new -key ask.key -subj "$(subj SEV-Milan)" -out ask.csr
printf 'basicConstraints=critical,CA:true\n' > ask.ext
openssl x509 -req -in ask.csr -CA ark.pem -CAkey ark.key -set_serial 1 -days 9000 "${pss[@]}" \
  -extfile ask.ext -out ask.pem 2>/dev/null

# VCEKs for reported TCB bootloader 3, tee 0, snp 8, microcode 209 (0xd1: DER needs a 0 byte).
for chip in a b; do
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "vcek-$chip.key" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "vcek-$chip.key" -outform der -out "vcek-$chip.pk8"
  openssl req -new -key "vcek-$chip.key" -subj "$(subj SEV-VCEK)" -out "vcek-$chip.csr"
  hwid=$(printf "chip-$chip%.0s" $(seq 1 11) | head -c 64 | xxd -p | tr -d '\n' | sed 's/../&:/g;s/:$//')
  printf '%s\n' \
    "1.3.6.1.4.1.3704.1.3.1=DER:02:01:03" \
    "1.3.6.1.4.1.3704.1.3.2=DER:02:01:00" \
    "1.3.6.1.4.1.3704.1.3.3=DER:02:01:08" \
    "1.3.6.1.4.1.3704.1.3.8=DER:02:02:00:d1" \
    "1.3.6.1.4.1.3704.1.4=DER:04:40:$hwid" > "vcek-$chip.ext"
  openssl x509 -req -in "vcek-$chip.csr" -CA ask.pem -CAkey ask.key -set_serial 2 -days 9000 \
    "${pss[@]}" -extfile "vcek-$chip.ext" -outform der -out "vcek-$chip.der" 2>/dev/null
  rm "vcek-$chip.csr" "vcek-$chip.ext" "vcek-$chip.key"
done
rm ask.csr ask.ext ark.key ask.key

"""A fixed set of varied messages shared by the message-layer tests and the Dovecot oracle.

Each is written with LF line ends for readability and stored with CRLF, as
mailtui's Maildirs store mail. ``RAW_ONLY`` messages keep their bytes exactly.
"""

from __future__ import annotations


def crlf(text: str | bytes) -> bytes:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


PLAIN = crlf("""\
Date: Tue, 1 Feb 1994 10:00:00 -0800
From: "Fred Foobar" <foobar@Blurdybloop.example>
Subject: afternoon meeting
To: mooch@owatagu.siam.edu.example, Terry Gray <gray@cac.washington.example>
Cc: minutes@CNRI.Reston.VA.example
Message-ID: <B27397-0100000@Blurdybloop.example>
In-Reply-To: <earlier@Blurdybloop.example>
MIME-Version: 1.0
Content-Type: TEXT/PLAIN; CHARSET=US-ASCII

Hello Joe, do you think we can meet at 3:30 tomorrow?
Second line.
""")

ALTERNATIVE = crlf("""\
Date: Wed, 02 Mar 2022 08:09:10 +0000
From: Alice <alice@example.org>
To: Bob <bob@example.net>
Subject: Alternatives
Message-ID: <alt-1@example.org>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="alt-boundary"

This is the preamble.

--alt-boundary
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

Caf=C3=A9 au lait, tr=C3=A8s bien.
Deuxi=C3=A8me ligne.
--alt-boundary
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 8bit

<p>Café au lait</p>

--alt-boundary--
This is the epilogue.
""")

MIXED = crlf("""\
Date: Thu, 3 Mar 2022 12:00:00 +0100
From: Carol <carol@example.com>
To: dave@example.com
Subject: Report attached
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=XyZ; charset=us-ascii
Content-Language: en, fr
Content-Location: http://example.com/report

--XyZ
Content-Type: text/plain

See attached.
--XyZ
Content-Type: application/pdf; name="report.pdf"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="report.pdf"; size=12
Content-ID: <part2@example.com>
Content-Description: The report
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==
Content-Language: de

JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURl
Y29kZT4+CnN0cmVhbQp4nDPQM1Qo5ypUMFAw0DMwslAwtTTVMzIxV7AwMdSzMDRUKErlCtdSyOMK
--XyZ--
""")

NESTED = crlf("""\
Date: Fri, 4 Mar 2022 09:30:00 -0500
From: Erin <erin@example.com>
To: frank@example.com
Subject: Fwd: the original
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: text/plain; charset=us-ascii

Forwarding this.

--outer
Content-Type: message/rfc822
Content-Disposition: inline

Date: Mon, 28 Feb 2022 17:00:00 +0000
From: Grace <grace@example.com>
To: Erin <erin@example.com>
Subject: the original
Message-ID: <orig@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: text/plain

Original text.
--inner
Content-Type: text/html

<b>Original</b> text.
--inner--

--outer--
""")

EIGHT_BIT = crlf("""\
Date: Sat, 5 Mar 2022 10:00:00 +0000
From: Jörg Müller <joerg@example.de>
To: "Zoë" <zoe@example.de>
Subject: Grüße aus Köln
Message-ID: <8bit@example.de>
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Schöne Grüße!
""")

ENCODED_WORDS = crlf("""\
Date: Sun, 6 Mar 2022 11:11:11 +0900
From: =?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@example.dk>
To: =?UTF-8?B?5bGx55Sw?= <yamada@example.jp>
Subject: =?UTF-8?B?5pel5pys6Kqe44Gu5Lu25ZCN?=
 =?UTF-8?Q?_and_more?=
Message-ID: <ew@example.jp>

Body.
""")

GROUPS = crlf("""\
Date: Mon, 7 Mar 2022 07:07:07 +0000
From: Henry <henry@example.com>
Sender: secretary@example.com
Reply-To: replies@example.com
To: undisclosed-recipients:;
Cc: Friends: ivan@example.com, "Judy, Q." <judy@example.com>;, kim@example.com
Bcc: <@route.example,@other.example:leo@example.com>
Subject: Groups and routes
Message-ID: <groups@example.com>

Body.
""")

MISSING = crlf("""\
Subject: Only a subject
X-Mailer: nothing

No From, no Date, no Content-Type.
""")

NO_BOUNDARY = crlf("""\
From: mallory@example.com
Subject: Broken multipart
Content-Type: multipart/mixed

--nothing
Content-Type: text/plain

Part text.
--nothing--
""")

BAD_CONTENT_TYPE = crlf("""\
From: mallory@example.com
Subject: Bad content type
Content-Type: text
Content-Transfer-Encoding: Quoted-Printable

Line one
Line two
""")

UNTERMINATED = crlf("""\
From: oscar@example.com
Subject: No closing boundary
Content-Type: multipart/mixed; boundary=b1

preamble
--b1
Content-Type: text/plain

first
--b1
Content-Type: text/plain; format=flowed; delsp=yes

second, never closed
""")

ODD_ADDRESSES = crlf("""\
From: peggy@example.com (Peggy Comment)
To: "john doe"@example.com, bare-local, <>
Cc: ;
Subject: Odd addresses
In-Reply-To: <a@example.com> <b@example.com>
Message-ID: not-an-angle-id

Body.
""")

HEADER_ONLY = crlf("""\
From: quinn@example.com
Subject: No body at all
""")

PARAMS = crlf("""\
From: rupert@example.com
Subject: Parameters
MIME-Version: 1.0
Content-Type: multipart/related; type="text/html"; boundary="=_rel"

--=_rel
Content-Type: text/html; charset="UTF-8"; Format="Fixed"

<img src="cid:img1">
--=_rel
Content-Type: image/png; name*=utf-8''na%C3%AFve.png
Content-Transfer-Encoding: base64
Content-ID: <img1>
Content-Disposition: inline; filename*0="long"; filename*1="name.png"

iVBORw0KGgo=
--=_rel--
""")

MESSAGE_ROOT = crlf("""\
From: wrapper@example.com
Subject: The whole message is a message
Content-Type: message/rfc822

From: inner@example.com
Subject: inner

inner body
""")

SINGLE_INNER = crlf("""\
From: sybil@example.com
Subject: Multipart holding a single-part message
Content-Type: multipart/mixed; boundary=q

--q
Content-Type: message/rfc822

From: inner@example.com
To:
Subject:

inner body
--q--
""")

DIGEST = crlf("""\
From: digest@example.com
Subject: A digest, no delimiters in one part
Content-Type: multipart/digest; boundary="d"

--d

From: one@example.com
Subject: first

one
--d
Content-Type: multipart/mixed; boundary="never-used"

no delimiter lines here
--d--
""")

ODD_FIELDS = crlf("""\
From: trent@example.com
From: second-from@example.com
Subject: first subject
Subject: second subject
Content-Type: ;;;
Content-Transfer-Encoding:
Content-Disposition: ; filename=x

body
""")

ALL = {
    "plain": PLAIN, "alternative": ALTERNATIVE, "mixed": MIXED, "nested": NESTED,
    "eight_bit": EIGHT_BIT, "encoded_words": ENCODED_WORDS, "groups": GROUPS,
    "missing": MISSING, "no_boundary": NO_BOUNDARY, "bad_content_type": BAD_CONTENT_TYPE,
    "unterminated": UNTERMINATED, "odd_addresses": ODD_ADDRESSES, "header_only": HEADER_ONLY,
    "params": PARAMS, "message_root": MESSAGE_ROOT, "single_inner": SINGLE_INNER,
    "digest": DIGEST, "odd_fields": ODD_FIELDS,
}

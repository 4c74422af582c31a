<?php
declare(strict_types=1);

/*
 * A portal page serving documents, for `php -S 127.0.0.1:PORT tests/php/document_download.php`
 * (tests/test_portal_documents.py): GET /?id=DOCUMENT_ID&permissions=KEY1,KEY2 calls
 * stream_document() of docs/portal-contract.md, section 13.2. A real portal takes the
 * permissions from its logged-in user, never from the query string; the cache and the API's
 * socket come from SYNCD_TEST_CACHE and SYNCD_TEST_SOCKET.
 */

require __DIR__ . '/portal_examples.php';

$permissions = array_values(array_filter(
    explode(',', (string) ($_GET['permissions'] ?? '')),
    fn (string $key): bool => $key !== ''
));
stream_document(
    (string) ($_GET['id'] ?? ''),
    $permissions,
    (string) getenv('SYNCD_TEST_CACHE'),
    (string) getenv('SYNCD_TEST_SOCKET')
);

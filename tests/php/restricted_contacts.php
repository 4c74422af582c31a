<?php
// A portal page that shows contacts with their restriction of processing, written from
// docs/portal-contract.md alone (tests/php/portal_examples.php is its PHP code verbatim): it opens
// the cache read-only and reads the documented column contacts.restricted through examples 9.3
// (a company page), 9.4 (a contact found by e-mail address) and syncd_contact_restricted().
//
//   echo '{"path": CACHE, "company": ID, "contacts": [ID, ...], "email": ADDRESS}' \
//       | php restricted_contacts.php
//
// Prints one JSON object with CRM IDs and flags only, never personal data:
//   {"uid": N, "page": [[id, bool], ...], "by_email": [[id, bool], ...],
//    "asked": [[id, bool], ...], "column": [[id, int], ...], "write": "refused"}
declare(strict_types=1);

require __DIR__ . '/portal_examples.php';

$in = json_decode(stream_get_contents(STDIN), true, 16, JSON_THROW_ON_ERROR);
$db = syncd_open($in['path']);
$out = syncd_read($db, function (PDO $db) use ($in): array {
    $page = syncd_company_page($db, $in['company']);
    $flags = fn (array $contacts): array => array_map(
        fn (array $contact): array => [$contact['crm_id'], $contact['restricted']],
        $contacts
    );
    $asked = [];
    foreach ($in['contacts'] as $id) {
        $asked[] = [$id, syncd_contact_restricted($db, $id)];
    }
    $column = $db->query('SELECT crm_id, restricted FROM contacts ORDER BY crm_id')
        ->fetchAll(PDO::FETCH_NUM);
    return [
        'uid' => posix_getuid(),
        'page' => $page === null ? null : $flags($page['contacts']),
        'by_email' => $flags(syncd_find_contacts_by_email($db, $in['email'])),
        'asked' => $asked,
        'column' => $column,
    ];
});

// The cache is read-only for the portal: the flag is syncd's to set.
try {
    $db->exec("UPDATE contacts SET restricted = 0");
    $out['write'] = 'succeeded';
} catch (PDOException $error) {
    $out['write'] = 'refused';
}
echo json_encode($out), "\n";

<?php
declare(strict_types=1);

/*
 * Lists devices' documents with syncd_device_documents() of docs/portal-contract.md, section
 * 13.1 (tests/test_portal_documents.py). Reads {"path": CACHE, "queries": [[DEVICE_ID,
 * [PERMISSION, ...]], ...]} on stdin; prints one JSON line: for each query, the document IDs
 * with their library and folder, in the order the function returns them. No names: they may
 * be anything.
 */

require $argv[1];

$request = json_decode(stream_get_contents(STDIN), true, 16, JSON_THROW_ON_ERROR);
$db = syncd_open($request['path']);
$answers = syncd_read($db, function (PDO $db) use ($request): array {
    $answers = [];
    foreach ($request['queries'] as [$deviceId, $permissions]) {
        $answers[] = array_map(
            fn (array $row): array => [$row['document_id'], $row['library'], $row['folder_path']],
            syncd_device_documents($db, $deviceId, $permissions)
        );
    }
    return $answers;
});
echo json_encode($answers, JSON_THROW_ON_ERROR), "\n";

import ArgumentParser
import Foundation
import Logging
import SyncCtlConfig
import SyncKit

/// Entry point: expands `--config FILE` into flags, then parses the command line.
@main
enum Entry {
    static func main() async {
        var arguments = Array(CommandLine.arguments.dropFirst())
        do {
            arguments = try ConfigFile.expand(arguments)
        } catch {
            FileHandle.standardError.write(Data("syncctl: \(error)\n".utf8))
            exit(1)
        }
        await SyncCtl.main(arguments)
    }
}

/// `syncctl`: the command-line face of SyncKit.
struct SyncCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "syncctl",
        abstract: "Keep a folder identical on every machine of a LAN, peer to peer.",
        discussion: """
            Every node points at a folder; every node ends with the union of all folders, and \
            keeps it as files are added, edited, renamed and deleted. There is no server.

            Start here:
              syncctl demo                      four nodes on this machine, watch them converge
              syncctl run --dir ~/Shared --discovery static --peer 192.168.1.20:22000
              syncctl status --dir ~/Shared     what the daemon syncing it is doing
              syncctl id --dir ~/Shared         this folder's node ID
              syncctl versions list --dir ~/Shared   old versions kept (run with --versioning)
            """,
        version: "0.1.0",
        subcommands: [Run.self, Status.self, Peers.self, Versions.self, GUIURL.self, Demo.self, ID.self],
        defaultSubcommand: nil
    )
}

/// Options every command that touches a folder shares.
struct FolderOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The folder to sync.", valueName: "path"))
    var dir: String

    @Option(name: .long, help: ArgumentHelp("Where to keep the node's identity and index (default: <dir>/.synckit).", valueName: "path"))
    var stateDir: String?

    var absoluteDir: String {
        let expanded = (dir as NSString).expandingTildeInPath
        return expanded.hasPrefix("/") ? expanded : FileManager.default.currentDirectoryPath + "/" + expanded
    }

    func validateFolder() throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: absoluteDir, isDirectory: &isDir), isDir.boolValue else {
            throw ValidationError("The folder \(absoluteDir) does not exist. Create it first (mkdir -p \(absoluteDir)).")
        }
        guard FileManager.default.isWritableFile(atPath: absoluteDir) else {
            throw ValidationError("The folder \(absoluteDir) is not writable by this user.")
        }
    }
}

/// `syncctl id`: prints the node ID of a folder (making the identity on first use).
struct ID: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print this folder's node ID (its TLS certificate's hash), making the identity on first use.",
        discussion: "The first line is the ID alone, in the form Syncthing uses: other nodes trust it with --trust.")
    @OptionGroup var folder: FolderOptions

    func validate() throws { try folder.validateFolder() }

    func run() throws {
        let state = folder.stateDir ?? folder.absoluteDir + "/.synckit"
        let identity = try NodeIdentity.loadOrCreate(in: state)
        print(identity.id.description)
        print("certificate: \(state)/cert.pem (give the ID above to the other nodes: --trust \(identity.id))")
    }
}
